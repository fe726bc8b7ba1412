"""Writes a one-layer OCI image layout (ref "busybox") holding a static busybox as /bin/busybox
and /bin/sh, for the guest's image cells. Standard library only: the layout is a few JSON
documents and a gzip'd tar, addressed by their SHA-256."""
import gzip, hashlib, io, json, os, sys, tarfile

busybox, out = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def blob(data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    d = tarfile.TarInfo("bin"); d.type = tarfile.DIRTYPE; d.mode = 0o755
    tar.addfile(d)
    tar.add(busybox, arcname="bin/busybox")
    s = tarfile.TarInfo("bin/sh"); s.type = tarfile.SYMTYPE; s.linkname = "busybox"
    tar.addfile(s)
layer_tar = raw.getvalue()
layer = blob(gzip.compress(layer_tar, mtime=0))
layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
config = blob(json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
}).encode())
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config, "layers": [layer],
}).encode())
manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
manifest["annotations"] = {"org.opencontainers.image.ref.name": "busybox"}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
