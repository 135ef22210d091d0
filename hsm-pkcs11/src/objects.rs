//! Finding objects by label and id.

use std::sync::RwLock;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::token::TokenInner;
use crate::{Error, Pkcs11Uri};

/// A key object found by its locator, its handle cached per token generation: looked up again
/// only after the token reconnects, or once when the token reports the handle invalid.
pub(crate) struct CachedObject {
    pub(crate) locator: Locator,
    class: ObjectClass,
    class_name: &'static str,
    handle: RwLock<(u64, ObjectHandle)>,
}

impl CachedObject {
    pub(crate) fn new(
        locator: Locator,
        class: ObjectClass,
        class_name: &'static str,
        generation: u64,
        handle: ObjectHandle,
    ) -> Self {
        Self {
            locator,
            class,
            class_name,
            handle: RwLock::new((generation, handle)),
        }
    }

    fn handle(
        &self,
        session: &Session,
        generation: u64,
        stale: bool,
        token: &str,
    ) -> Result<ObjectHandle, Error> {
        if !stale {
            let cached = *self.handle.read().unwrap_or_else(|e| e.into_inner());
            if cached.0 == generation {
                return Ok(cached.1);
            }
        }
        let found = find_one(session, self.class, self.class_name, &self.locator, token)?;
        *self.handle.write().unwrap_or_else(|e| e.into_inner()) = (generation, found);
        Ok(found)
    }

    /// One `C_SignInit` + `C_Sign` with this object on a pooled session, into a buffer of
    /// `max_len` bytes.
    pub(crate) fn sign(
        &self,
        token: &TokenInner,
        mechanism: &Mechanism<'_>,
        data: &[u8],
        max_len: usize,
        always_authenticate: bool,
    ) -> Result<Vec<u8>, Error> {
        token.with_session("C_Sign", |session, generation| {
            let mut stale = false;
            loop {
                let object = self.handle(session, generation, stale, &token.label)?;
                match token.module.sign(
                    session,
                    mechanism,
                    object,
                    data,
                    max_len,
                    always_authenticate.then(|| token.pin()).flatten(),
                ) {
                    Ok(signature) => return Ok(signature),
                    Err(cryptoki::error::Error::Pkcs11(
                        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                        _,
                    )) if !stale => stale = true,
                    Err(e) => {
                        return Err(Error::from_cryptoki(
                            e,
                            token.context(&self.locator.describe()),
                        ));
                    }
                }
            }
        })
    }
}

/// The label and/or id that names an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Locator {
    pub(crate) label: Option<String>,
    pub(crate) id: Option<Vec<u8>>,
}

impl Locator {
    pub(crate) fn from_uri(uri: &Pkcs11Uri) -> Result<Self, Error> {
        if uri.object.is_none() && uri.id.is_none() {
            return Err(Error::NoObjectSelector);
        }
        Ok(Self {
            label: uri.object.clone(),
            id: uri.id.clone(),
        })
    }

    pub(crate) fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut template = vec![Attribute::Class(class)];
        if let Some(label) = &self.label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            template.push(Attribute::Id(id.clone()));
        }
        template
    }

    /// The URI form of this locator, for messages.
    pub(crate) fn describe(&self) -> String {
        Pkcs11Uri {
            object: self.label.clone(),
            id: self.id.clone(),
            ..Pkcs11Uri::default()
        }
        .to_string()
    }
}

/// Every object of `class` the locator matches.
pub(crate) fn find_all(
    session: &Session,
    class: ObjectClass,
    locator: &Locator,
    token: &str,
) -> Result<Vec<ObjectHandle>, Error> {
    session.find_objects(&locator.template(class)).map_err(|e| {
        Error::from_cryptoki(e, format!("token '{token}', find {}", locator.describe()))
    })
}

/// The single object of `class` the locator matches.
pub(crate) fn find_one(
    session: &Session,
    class: ObjectClass,
    class_name: &'static str,
    locator: &Locator,
    token: &str,
) -> Result<ObjectHandle, Error> {
    let found = find_all(session, class, locator, token)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::ObjectNotFound {
            class: class_name,
            selector: locator.describe(),
            token: token.to_owned(),
        }),
        many => Err(Error::AmbiguousObject {
            class: class_name,
            selector: locator.describe(),
            token: token.to_owned(),
            count: many.len(),
        }),
    }
}

/// One attribute's bytes, `None` when the token does not have it or refuses it.
pub(crate) fn bytes_attribute(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
) -> Option<Vec<u8>> {
    let attributes = session.get_attributes(object, &[kind]).ok()?;
    attributes.into_iter().find_map(|a| match a {
        Attribute::EcParams(v)
        | Attribute::EcPoint(v)
        | Attribute::Modulus(v)
        | Attribute::PublicExponent(v)
        | Attribute::PublicKeyInfo(v)
        | Attribute::Value(v)
        | Attribute::Id(v)
        | Attribute::Label(v)
        | Attribute::Subject(v)
            if !v.is_empty() =>
        {
            Some(v)
        }
        _ => None,
    })
}
