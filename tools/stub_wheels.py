"""Empty stand-in wheels for packages a registry mirror lacks, for `make check-gpu-resolution`.

    python tools/stub_wheels.py /tmp/kit-stub-wheels nvidia-nccl-cu13==2.29.7 ...

Each wheel is named and versioned as asked and holds nothing: the resolver can then check every
other pin. They are py3-none-any, so where the real package exists (PyPI), pip prefers the real,
platform-specific wheel. Never install them.
"""
from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path


def stub_wheel(folder: Path, spec: str) -> Path:
    name, _, version = spec.partition("==")
    if not name or not re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version):
        raise SystemExit(f"expected NAME==VERSION, got {spec!r}")
    normalized = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{normalized}-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: llm2024-kit tools/stub_wheels.py\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}\n" for path, text in files.items())
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{normalized}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


if __name__ == "__main__":
    for spec in sys.argv[2:]:
        print(stub_wheel(Path(sys.argv[1]), spec))
