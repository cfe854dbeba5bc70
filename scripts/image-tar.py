#!/usr/bin/env python3
"""Builds the Trunkgate images as docker-archive tarballs, without a container engine.

  image-tar.py [--spec images/images.json] [--bin-dir target/release] [--out-dir target/images]
               [--registry localhost] [--tag VERSION] [IMAGE ...]

IMAGE is a key of the spec's "images" (default: all of them). For each one it writes
OUT_DIR/trunkgate-IMAGE.tar, named REGISTRY/trunkgate-IMAGE:TAG, with a single uncompressed
layer holding the binary, the shared libraries `ldd` lists for it (at the paths the dynamic
loader looks in), and the spec's common files. No base image: the layer is the whole file
system. Entries are sorted and carry mtime 0 and owner 0:0 (unless the spec says otherwise),
so the same binaries give the same image digest.

A "binary" is a release binary in BIN_DIR, or an absolute path of a Debian package's binary
("package" names it, e.g. redis-server for the lab Redis): a missing package is installed with
apt-get (root or sudo), its copyright file goes into the image, and the labels name the package
version and the license of its main files.

The tarball is what `docker load`, `podman load`, `nerdctl load`, `ctr images import`,
`kind load image-archive` and `k3d image import` read. It prints one line per image:
PATH REF sha256:CONFIG_DIGEST SIZE_BYTES.
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import stat
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class Layer:
    """The file system of one image: path -> (kind, payload, mode, uid, gid)."""

    def __init__(self):
        self.entries = {}

    def _parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, ("dir", None, 0o755, 0, 0))

    def add_dir(self, path, mode=0o755, owner=0):
        self._parents(path)
        self.entries[path.strip("/")] = ("dir", None, mode, owner, owner)

    def add_file(self, path, source, mode=None):
        real = os.path.realpath(source)
        if mode is None:
            mode = stat.S_IMODE(os.stat(real).st_mode)
        self._parents(path)
        self.entries[path.strip("/")] = ("file", real, mode, 0, 0)

    def add_text(self, path, text, mode=0o644):
        self._parents(path)
        self.entries[path.strip("/")] = ("text", text.encode(), mode, 0, 0)

    def write(self, fileobj):
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.entries):
                kind, payload, mode, uid, gid = self.entries[name]
                info = tarfile.TarInfo(name)
                info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "text":
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                else:
                    info.size = os.path.getsize(payload)
                    with open(payload, "rb") as f:
                        tar.addfile(info, f)


def linked_libraries(binary):
    """(path the loader uses, file on this machine) for every shared library of `binary`."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        sys.exit("image-tar: ldd is needed to find the binary's shared libraries")
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        sys.exit(f"image-tar: ldd {binary} failed:\n{text}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            sys.exit(f"image-tar: {binary} needs a library this machine lacks: {line}")
        m = re.match(r"\S+ => (/\S+) \(0x", line) or re.match(r"(/\S+) \(0x", line)
        if m:
            libs.append((m.group(1), m.group(1)))
    return libs


def install_package(package, binary):
    """apt-get install `package` (Debian), as root or through sudo, for `binary`."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"image-tar: {binary} is missing: apt-get install {package}", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]):
        if subprocess.run(sudo + cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            sys.exit(f"image-tar: {' '.join(cmd)} failed; install {package} yourself")


def package_labels(package):
    """The Debian package's version and the license of its main files (`Files: *` of its
    machine-readable copyright file), as image labels."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, check=False).stdout.strip()
    labels = {"io.trunkgate.debian-package": f"{package}={version or '?'}"}
    with open(f"/usr/share/doc/{package}/copyright") as f:
        stanzas = f.read().split("\n\n")
    main = next((s for s in stanzas if re.search(r"^Files:\s*\*\s*$", s, re.M)), "")
    m = re.search(r"^License:\s*(\S.*)$", main, re.M)
    if m:
        labels["org.opencontainers.image.licenses"] = m.group(1).strip()
    return labels


def add_dirs(layer, dirs):
    for d in dirs:
        path, mode, *owner = d.split(":")
        layer.add_dir(path, int(mode, 8), int(owner[0]) if owner else 0)


def build_layer(spec, image, bin_dir):
    common = spec.get("common", {})
    binary = image["binary"]
    package = image.get("package")
    if os.path.isabs(binary):
        if not os.access(binary, os.X_OK) and package:
            install_package(package, binary)
        if not os.access(binary, os.X_OK):
            sys.exit(f"image-tar: {binary} is missing")
    else:
        binary = os.path.join(bin_dir, binary)
        if not os.access(binary, os.X_OK):
            sys.exit(f"image-tar: {binary} is missing; build it first (cargo build --release)")
    layer = Layer()
    add_dirs(layer, common.get("dirs", []) + image.get("dirs", []))
    for path, text in sorted(common.get("text", {}).items()):
        layer.add_text(path, text)
    for f in common.get("files", []):
        if os.path.exists(f["from"]):
            layer.add_file(f["to"], f["from"], 0o644)
        elif not f.get("optional"):
            sys.exit(f"image-tar: {f['from']} is missing")
    if package:
        copyright_file = f"/usr/share/doc/{package}/copyright"
        layer.add_file(copyright_file, copyright_file, 0o644)
    for inside, source in linked_libraries(binary):
        layer.add_file(inside, source)
    layer.add_file(image["entrypoint"][0], binary, 0o755)
    return layer


def write_archive(out_path, ref, config_bytes, layer_path, diff_id):
    """docker-archive: the config blob, the layer, manifest.json naming them and the tag."""
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":", 1)[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]
    tmp = out_path + ".part"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(name, data):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))

        add_bytes(config_name, config_bytes)
        info = tarfile.TarInfo(layer_name)
        info.size, info.mtime, info.mode = os.path.getsize(layer_path), 0, 0o644
        with open(layer_path, "rb") as f:
            tar.addfile(info, f)
        add_bytes("manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, out_path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default=os.path.join(ROOT, "images", "images.json"))
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--out-dir", default=os.path.join(ROOT, "target", "images"))
    p.add_argument("--registry", default="localhost")
    p.add_argument("--tag", required=True)
    p.add_argument("images", nargs="*")
    a = p.parse_args()

    with open(a.spec) as f:
        spec = json.load(f)
    names = a.images or sorted(spec["images"])
    unknown = [n for n in names if n not in spec["images"]]
    if unknown:
        sys.exit(f"image-tar: no image {unknown} in {a.spec} (have {sorted(spec['images'])})")
    arch = ARCH.get(platform.machine())
    if not arch:
        sys.exit(f"image-tar: unknown architecture {platform.machine()}")
    os.makedirs(a.out_dir, exist_ok=True)
    common = spec.get("common", {})

    for name in names:
        image = spec["images"][name]
        ref = f"{a.registry}/trunkgate-{name}:{a.tag}"
        layer = build_layer(spec, image, a.bin_dir)
        with tempfile.NamedTemporaryFile(dir=a.out_dir, suffix=".layer", delete=False) as lf:
            layer_path = lf.name
            layer.write(lf)
        try:
            h = hashlib.sha256()
            with open(layer_path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            diff_id = "sha256:" + h.hexdigest()
            labels = dict(common.get("labels", {}))
            if image.get("package"):
                labels.update(package_labels(image["package"]))
            labels.update(image.get("labels", {}))
            labels["org.opencontainers.image.version"] = a.tag
            config = {
                "architecture": arch,
                "os": "linux",
                "created": "1970-01-01T00:00:00Z",
                "config": {
                    "User": image.get("user", common.get("user", "")),
                    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                    "Entrypoint": image["entrypoint"],
                    "Cmd": image.get("cmd") or None,
                    "WorkingDir": "/",
                    "ExposedPorts": {port: {} for port in image.get("ports", [])},
                    "Labels": labels,
                },
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created": "1970-01-01T00:00:00Z",
                             "created_by": f"scripts/image-tar.py {name} (images/images.json)"}],
            }
            config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
            out = os.path.join(a.out_dir, f"trunkgate-{name}.tar")
            write_archive(out, ref, config_bytes, layer_path, diff_id)
        finally:
            os.unlink(layer_path)
        digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        print(out, ref, digest, os.path.getsize(out))


if __name__ == "__main__":
    main()
