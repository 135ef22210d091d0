#!/usr/bin/env python3
"""Regenerates the SAS known-answer files with Python's standard library only, as an
implementation independent of hsm-core. Run from this folder: python3 generate.py"""
import base64
import hashlib
import hmac
import urllib.parse


def token(sr: str, key: bytes, se: int) -> str:
    mac = hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(mac).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=registration"


with open("sas-lowercase.txt", "w") as f:
    f.write(token("0ne00000001%2fregistrations%2fdevice-1", b"secret-key", 1700000000) + "\n")
with open("sas-plain.txt", "w") as f:
    f.write(token("0ne00000001/registrations/device-1", b"secret-key", 1700000000) + "\n")
