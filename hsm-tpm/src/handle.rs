//! Persistent handles: where objects live across TPM resets.

use std::fmt;
use std::str::FromStr;

use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;

use crate::Error;

/// A TPM persistent handle (`0x81000000..=0x81FFFFFF`), printed and parsed as `0x81000100`.
///
/// The defaults are the handles the Azure IoT C SDK and Azure's identity service use, so a
/// device provisioned by either keeps working with this driver and vice versa.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistentHandle(u32);

impl PersistentHandle {
    /// The endorsement key: `0x81010001` (TCG "EK Credential Profile", the C SDK, tpm2-tools).
    pub const EK: Self = Self(0x8101_0001);
    /// The storage root key: `0x81000001` (TCG "TPM v2.0 Provisioning Guidance", the C SDK).
    pub const SRK: Self = Self(0x8100_0001);
    /// The DPS identity HMAC key imported by [`TpmIdentity::activate_identity_key`]:
    /// `0x81000100` (the C SDK's `DPS_ID_KEY_HANDLE`).
    ///
    /// [`TpmIdentity::activate_identity_key`]: crate::TpmIdentity::activate_identity_key
    pub const IDENTITY: Self = Self(0x8100_0100);
    /// A suggested handle for the IoT Hub device key DPS returns on assignment: `0x81000101`.
    pub const DEVICE_KEY: Self = Self(0x8100_0101);

    const FIRST: u32 = 0x8100_0000;
    const LAST: u32 = 0x81FF_FFFF;

    /// The handle `value`.
    ///
    /// # Errors
    /// [`Error::NotPersistent`] outside `0x81000000..=0x81FFFFFF`.
    pub const fn new(value: u32) -> Result<Self, Error> {
        if value >= Self::FIRST && value <= Self::LAST {
            Ok(Self(value))
        } else {
            Err(Error::NotPersistent { value })
        }
    }

    /// The handle as a number.
    pub const fn value(self) -> u32 {
        self.0
    }

    pub(crate) fn tpm_handle(self) -> Result<TpmHandle, Error> {
        Ok(TpmHandle::Persistent(self.persistent_tpm_handle()?))
    }

    pub(crate) fn persistent(self) -> Result<Persistent, Error> {
        Ok(Persistent::Persistent(self.persistent_tpm_handle()?))
    }

    fn persistent_tpm_handle(self) -> Result<PersistentTpmHandle, Error> {
        // Cannot fail: the range check is the one PersistentTpmHandle::new makes.
        PersistentTpmHandle::new(self.0).map_err(|_| Error::NotPersistent { value: self.0 })
    }
}

impl fmt::Display for PersistentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl fmt::Debug for PersistentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersistentHandle({self})")
    }
}

impl FromStr for PersistentHandle {
    type Err = Error;

    /// Parses `0x81000100` (hex with `0x`, as tpm2-tools prints handles) or a decimal number.
    fn from_str(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => text.parse(),
        }
        .map_err(|_| Error::NotPersistent { value: 0 })?;
        Self::new(value)
    }
}

impl TryFrom<u32> for PersistentHandle {
    type Error = Error;

    fn try_from(value: u32) -> Result<Self, Error> {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_text() {
        assert_eq!(PersistentHandle::IDENTITY.to_string(), "0x81000100");
        assert_eq!(
            "0x81010001".parse::<PersistentHandle>().unwrap(),
            PersistentHandle::EK
        );
        assert_eq!(
            "2164260865".parse::<PersistentHandle>().unwrap(),
            PersistentHandle::SRK
        );
        for bad in [0x8000_0000, 0x80FF_FFFF, 0x8200_0000, 0x4000_0001] {
            assert!(matches!(
                PersistentHandle::new(bad),
                Err(Error::NotPersistent { value }) if value == bad
            ));
        }
        assert!("0x8100".parse::<PersistentHandle>().is_err());
        assert!("srk".parse::<PersistentHandle>().is_err());
        assert_eq!(
            format!("{:?}", PersistentHandle::SRK),
            "PersistentHandle(0x81000001)"
        );
        assert!(matches!(
            PersistentHandle::SRK.tpm_handle(),
            Ok(TpmHandle::Persistent(_))
        ));
    }
}
