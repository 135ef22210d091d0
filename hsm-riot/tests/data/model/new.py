from ec import *
import hashlib,hmac,struct
class GlibcRand:
    def __init__(s,seed):
        if seed==0: seed=1
        r=[0]*344
        r[0]=seed if seed<2**31 else seed-2**32
        for i in range(1,31):
            hi,lo=int(r[i-1]/127773), 0
            w=r[i-1]
            hi=int(w/127773); lo=w-hi*127773
            w=16807*lo-2836*hi
            if w<0: w+=2147483647
            r[i]=w
        for i in range(31,34): r[i]=r[i-31]
        for i in range(34,344): r[i]=(r[i-31]+r[i-3])&0xffffffff
        s.r=r
    def next(s):
        v=(s.r[-31]+s.r[-3])&0xffffffff
        s.r.append(v); return v>>1
g=GlibcRand(1); print([g.next() for _ in range(3)])
class Drbg:
    def __init__(s,seed):
        s.K=b'\0'*32; s.V=b'\1'*32; s.upd(seed)
    def upd(s,data):
        s.K=hmac.new(s.K,s.V+b'\0'+data,hashlib.sha256).digest(); s.V=hmac.new(s.K,s.V,hashlib.sha256).digest()
        if data:
            s.K=hmac.new(s.K,s.V+b'\1'+data,hashlib.sha256).digest(); s.V=hmac.new(s.K,s.V,hashlib.sha256).digest()
    def gen(s,n=32):
        s.V=hmac.new(s.K,s.V,hashlib.sha256).digest(); out=s.V[:n]; s.upd(b''); return out
def seed_drbg(src,label):
    val=0
    for b in src: val=(val+(0xffffffff-b))&0xffffffff
    g=GlibcRand((~val)&0xffffffff)
    ent=bytes(g.next()&0xff for _ in range(48))
    return Drbg(ent+label)
def privkey(d):
    while True:
        x=int.from_bytes(d.gen(),'big')
        if 1<=x<n: return x
def blind(d):
    while True:
        l=int.from_bytes(d.gen(),'big')
        while l>=p: l>>=1
        if l>1: return l
cdi=bytes.fromhex("ce1c95020a4902a87fde4dbf8977b68362a944eac301c4c6c25828c92bd80780")
fwid=bytes.fromhex("6BE9B184C937C28E122EEE512B68EA8E00C3DD159EA4E85E84CBA966F446CD4E")
d1=hashlib.sha256(cdi).digest()
D=seed_drbg(d1,b"Identity"); dev=privkey(D); blind(D)
P=mul(dev); print("dev pub", "04"+P[0].to_bytes(32,'big').hex()+P[1].to_bytes(32,'big').hex())
d2=hashlib.sha256(d1+fwid).digest()
D=seed_drbg(d2,b"Alias"); ali=privkey(D); blind(D)
A=mul(ali); print("alias pub", "04"+A[0].to_bytes(32,'big').hex()+A[1].to_bytes(32,'big').hex())
print("alias priv", ali.to_bytes(32,'big').hex())
