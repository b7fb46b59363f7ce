"""List the wheels of a wheelhouse whose distribution this Python does not have (bench/gpu_check.sh installs only
those, so every package the machine already has, torch first, is kept as it is).

    python bench/missing_wheels.py bench/wheelhouse     # paths on stdout, "kept NAME VERSION" on stderr
"""
import importlib.metadata as md
import re
import sys
from pathlib import Path


def dist_name(wheel: Path) -> str:
    """Normalised distribution name from a wheel's file name (PEP 427/503)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def installed_version(name):
    """The installed version of distribution `name`, or None."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def main(folder):
    """Print the missing wheels' paths; exit 2 when the folder has no wheels."""
    wheels = sorted(Path(folder).glob("*.whl"))
    if not wheels:
        sys.exit(f"{folder}: no wheels; make them with `bash bench/make_wheelhouse.sh` on a machine with PyPI")
    for wheel in wheels:
        version = installed_version(dist_name(wheel))
        if version:
            print(f"kept {dist_name(wheel)} {version}", file=sys.stderr)
        else:
            print(wheel)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/wheelhouse")
