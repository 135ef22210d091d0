exec(open('new.py').read().split('cdi=bytes')[0])
import hashlib,struct,base64
def L(n):
    if n<128: return bytes([n])
    if n<256: return bytes([0x81,n])
    return bytes([0x82,n>>8,n&255])
def tlv(t,c): return bytes([t])+L(len(c))+c
def seq(*a): return tlv(0x30,b''.join(a))
def set_(*a): return tlv(0x31,b''.join(a))
def oid(v):
    out=bytes([v[0]*40+v[1]])
    for x in v[2:]:
        d=[x&127]; x>>=7
        while x: d.append((x&127)|128); x>>=7
        out+=bytes(reversed(d))
    return tlv(6,out)
def intarr(b):
    i=0
    while i<len(b) and b[i]==0: i+=1
    b=b[i:]
    if b and b[0]>=0x80: b=b'\0'+b
    return tlv(2,b)
def intv(v): return intarr(struct.pack('>I',v))
def utf8(s): return tlv(0x0c,s.encode())
def bits(b): return tlv(3,b'\0'+b)
def octs(b): return tlv(4,b)
def expl(n,*a): return tlv(0xa0+n,b''.join(a))
BOOL=b'\x01\x01\xff'
ECDSA=[1,2,840,10045,4,3,2]; ECPUB=[1,2,840,10045,2,1]; P256=[1,2,840,10045,3,1,7]
def name(cn,o,c): return seq(set_(seq(oid([2,5,4,3]),utf8(cn))),set_(seq(oid([2,5,4,6]),utf8(c))),set_(seq(oid([2,5,4,10]),utf8(o))))
def spki(pub): return seq(seq(oid(ECPUB),oid(P256)),bits(pub))
def head(serial,iss,sub,pub):
    return [expl(0,intv(2)), intarr(serial), seq(oid(ECDSA)), name(*iss), seq(tlv(0x17,b"170101000000Z"),tlv(0x17,b"370101000000Z")), name(*sub), spki(pub)]
KU=seq(oid([2,5,29,15]),octs(bits(b'\x04')))
def BC(pl): return seq(oid([2,5,29,19]),BOOL,octs(seq(BOOL,intv(pl))))
def AKI(kid): return seq(oid([2,5,29,35]),octs(seq(expl(0,octs(kid)))))
def alias_tbs(serial,iss,sub,apub,dpub,fwid):
    ext=expl(3,seq(KU, seq(oid([2,5,29,37]),octs(seq(oid([1,3,6,1,5,5,7,3,2])))), AKI(hashlib.sha1(dpub).digest()),
        seq(oid([2,23,133,5,4,1]),octs(seq(intv(1),spki(dpub),seq(oid([2,16,840,1,101,3,4,2,1]),octs(fwid)))))))
    return seq(*head(serial,iss,sub,apub),ext)
def dev_tbs(serial,iss,sub,pub,aki):
    e=[KU,BC(1)]+([AKI(aki)] if aki is not None else [])
    return seq(*head(serial,iss,sub,pub),expl(3,seq(*e)))
def root_tbs(serial,iss,sub,pub): return seq(*head(serial,iss,sub,pub),expl(3,seq(KU,BC(2))))
def sign(drbg,d,data):
    e=int.from_bytes(hashlib.sha256(data).digest(),'big')%n
    while True:
        while True:
            k=privkey(drbg); blind(drbg); r=mul(k)[0]%n
            if r: break
        t=privkey(drbg)
        s=(e+r*d)*pow(k,-1,n)%n
        if s: return r,s
def cert(tbs,r,s):
    for v in (r,s): assert v>=2**248, "MpiToInt short-value bug would trigger"
    return seq(tbs,seq(oid(ECDSA)),bits(seq(intarr(r.to_bytes(32,'big')),intarr(s.to_bytes(32,'big')))))
def pem(der,kind="CERTIFICATE"): return "-----BEGIN %s-----\n%s\n-----END %s-----\n"%(kind,base64.b64encode(der).decode(),kind)
def pt(k): P=mul(k); return b'\x04'+P[0].to_bytes(32,'big')+P[1].to_bytes(32,'big')
cdi=bytes.fromhex("ce1c95020a4902a87fde4dbf8977b68362a944eac301c4c6c25828c92bd80780")
fwid=bytes.fromhex("6BE9B184C937C28E122EEE512B68EA8E00C3DD159EA4E85E84CBA966F446CD4E")
d1=hashlib.sha256(cdi).digest()
D=seed_drbg(d1,b"Identity"); dev=privkey(D); blind(D)
d2=hashlib.sha256(d1+fwid).digest()
D=seed_drbg(d2,b"Alias"); ali=privkey(D); blind(D)
dpub,apub=pt(dev),pt(ali)
at=alias_tbs(bytes([10,11,12,13,14,0,0,0]),("riot-signer-core","MSR_TEST","US"),("riot-device-cert","MSR_TEST","US"),apub,dpub,fwid)
r,s=sign(D,dev,at); ac=cert(at,r,s)
open('alias_model.der','wb').write(ac)
rootD=int.from_bytes(bytes.fromhex("e3e7c713573fd9c8b8e1eaf453f1561502f071c05349c8dae626a90b1788e570"),'big')
rootpub=b'\x04'+bytes.fromhex("eb9cfcc84994d350a71f9dc5093dd2feb94897f495a55decc90f52a1265aab69")+bytes.fromhex("7dceb16239f83cd59aad9e05b14f70a2fad4fb04e537d2639a469efdb05b1edf")
rt=root_tbs(bytes([0x1a,0x2b,0x3c,0x4d,0x5e,0,0,0]),("riot-root","MSR_TEST","US"),("riot-root","MSR_TEST","US"),rootpub)
r2,s2=sign(D,rootD,rt); rc=cert(rt,r2,s2); open('root_model.der','wb').write(rc)
print("alias TBS hex:", at.hex()); print(); print(pem(ac)); print(pem(rc))
print("root TBS hex:", rt.hex())
print("alias sig r s", hex(r), hex(s)); print("root sig r s", hex(r2),hex(s2))
