"""Sets up what benchmark.arm needs to run our TFLite files on emulated ARM cores, from Debian's
archive and PyPI only: QEMU user mode (qemu-aarch64 7.2, Debian bookworm), an arm64 Debian
userland with its Python, the aarch64 wheels of ai-edge-litert and its dependencies at the
versions this (x86) environment has, and our instruction-counting QEMU plugin
(benchmark/qemu/insn_count.c) compiled against the plugin header of Debian's QEMU source.

Everything goes under --arm_dir (default ~/.cache/repghost-tf/arm, or $REPGHOST_TF_ARM_DIR),
never into the project's virtual environment. Each step builds into a temporary folder and
renames it when complete, so that a second run re-uses what is there (seconds) and a run that
was interrupted starts the step again. New versions of the x86 wheels, of Debian's QEMU or of
the plugin source get their own folders.

Usage: python -m benchmark.arm_setup [--arm_dir=DIR]
Needs root for `apt-get install qemu-user mmdebstrap gcc` where they are missing, and network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from typing import Callable, Sequence

from absl import flags

from repghost_tf import cli
from packaging.requirements import Requirement

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Python and the C++ runtime LiteRT links against; mmdebstrap adds their dependencies.
ROOT_PACKAGES = ("python3.11", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1")
GUEST_PYTHON = "3.11"  # bookworm's
GUEST_GLIBC_MINOR = 36  # bookworm's glibc 2.36: the newest manylinux tag its wheels may have
HOST_TOOLS = {"qemu-aarch64": "qemu-user", "mmdebstrap": "mmdebstrap", "gcc": "gcc",
              "readelf": "binutils"}
WHEELS = ("ai-edge-litert", "numpy")
PLUGIN_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qemu", "insn_count.c")
PLUGIN_HEADER = "include/qemu/qemu-plugin.h"
# MIDR_EL1 of QEMU 7.2's CPU models (target/arm/cpu64.c). LiteRT's cpuinfo library reads the
# micro-architecture from /proc/cpuinfo, which QEMU passes through from the x86 host (cpuinfo
# crashes on it), so each CPU gets a root whose /proc/cpuinfo names it; the ISA extensions come
# from the auxiliary vector (AT_HWCAP), which QEMU sets from -cpu.
CPU_MIDR = {
    "cortex-a35": 0x411FD040,
    "cortex-a53": 0x410FD034,
    "cortex-a57": 0x411FD070,
    "cortex-a72": 0x410FD083,
    "cortex-a76": 0x414FD0B1,
    "neoverse-n1": 0x414FD0C1,
}

ARM_DIR = flags.DEFINE_string(
    "arm_dir", None,
    "Folder holding the ARM setup; default $REPGHOST_TF_ARM_DIR or ~/.cache/repghost-tf/arm.",
)


class SetupError(RuntimeError):
    """A setup step that cannot be done here; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """Where the pieces of a complete setup are."""

    directory: str
    root: str
    site: str
    plugin: str
    qemu: str
    qemu_version: str
    wheels: dict[str, str]

    def cpu_root(self, cpu: str) -> str:
        """The -L root for `cpu`: the userland's top-level entries as symlinks, plus a
        /proc/cpuinfo that names the CPU (see CPU_MIDR)."""
        if cpu not in CPU_MIDR:
            raise SetupError(f"unknown CPU {cpu!r}; choose from {', '.join(CPU_MIDR)}")
        path = os.path.join(self.directory, "cpus", f"{os.path.basename(self.root)}-{cpu}")
        if not os.path.isdir(path):
            temporary = _fresh(path)
            for entry in os.listdir(self.root):
                if entry != "proc":
                    os.symlink(os.path.join(self.root, entry), os.path.join(temporary, entry))
            os.makedirs(os.path.join(temporary, "proc"))
            with open(os.path.join(temporary, "proc", "cpuinfo"), "w", encoding="ascii") as file:
                file.write(cpuinfo(cpu, os.cpu_count() or 1))
            os.rename(temporary, path)
        return path


def default_directory() -> str:
    flag = ARM_DIR.value if flags.FLAGS.is_parsed() else None
    return flag or os.environ.get("REPGHOST_TF_ARM_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "repghost-tf", "arm")


def cpuinfo(cpu: str, processors: int) -> str:
    """An arm64 Linux /proc/cpuinfo for `processors` cores of QEMU's model `cpu`."""
    midr = CPU_MIDR[cpu]
    block = (
        "BogoMIPS\t: 50.00\nFeatures\t: fp asimd cpuid\n"
        f"CPU implementer\t: 0x{midr >> 24:02x}\nCPU architecture: 8\n"
        f"CPU variant\t: 0x{(midr >> 20) & 0xF:x}\nCPU part\t: 0x{(midr >> 4) & 0xFFF:03x}\n"
        f"CPU revision\t: {midr & 0xF}\n\n"
    )
    return "".join(f"processor\t: {index}\n{block}" for index in range(processors))


def _run(command: Sequence[str], what: str, **kwargs) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    except OSError as error:
        raise SetupError(f"{what}: {error}") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        errors = [line for line in lines if line.startswith(("E:", "ERROR"))]
        raise SetupError(f"{what} failed: {errors[0] if errors else lines[-1]}")
    return done.stdout


def _fresh(path: str) -> str:
    """An empty temporary folder next to `path`, to be renamed to it when complete."""
    temporary = f"{path}.partial"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    return temporary


def host_tools(log: Callable[[str], None]) -> None:
    """Installs the Debian packages of the missing tools (needs root)."""
    missing = sorted({package for tool, package in HOST_TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise SetupError(f"needs {', '.join(missing)}: run `apt-get install {' '.join(missing)}` "
                         "as root")
    if not shutil.which("apt-get"):
        raise SetupError(f"needs {', '.join(missing)} and has no apt-get to install them")
    log(f"apt-get install {' '.join(missing)}")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update", env=environment)
    _run(["apt-get", "install", "-y", "-qq", *missing], "apt-get install", env=environment)


def qemu_version() -> str:
    """The Debian source version of the installed qemu-user, e.g. 1:7.2+dfsg-7+deb12u18."""
    return _run(["dpkg-query", "-W", "-f", "${source:Version}", "qemu-user"],
                "dpkg-query qemu-user").strip()


def userland(directory: str, log: Callable[[str], None]) -> str:
    """An arm64 Debian userland with Python, unpacked only (no maintainer scripts run)."""
    root = os.path.join(directory, f"root-{SUITE}-arm64")
    if os.path.isdir(root):
        return root
    temporary = _fresh(root)
    log(f"mmdebstrap: arm64 {SUITE} userland with {', '.join(ROOT_PACKAGES)}")
    _run(["mmdebstrap", "--arch=arm64", "--variant=extract", "--mode=auto", "--quiet",
          f"--include={','.join(ROOT_PACKAGES)}", SUITE, temporary, MIRROR], "mmdebstrap")
    if not os.path.isfile(os.path.join(temporary, "usr", "bin", f"python{GUEST_PYTHON}")):
        raise SetupError(f"mmdebstrap: the userland has no python{GUEST_PYTHON}")
    os.rename(temporary, root)
    return root


def pinned_wheels() -> dict[str, str]:
    """ai-edge-litert, numpy and LiteRT's other dependencies -> the version installed here."""
    try:
        versions = {name: metadata.version(name) for name in WHEELS}
    except metadata.PackageNotFoundError as error:
        raise SetupError(f"this environment has no {error.args[0]} to match") from None
    for text in metadata.requires("ai-edge-litert") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            versions.setdefault(requirement.name, metadata.version(requirement.name))
        except metadata.PackageNotFoundError:
            versions.setdefault(requirement.name, "")
    return versions


def wheels(directory: str, log: Callable[[str], None]) -> tuple[str, dict[str, str]]:
    """The aarch64 wheels of pinned_wheels() in their own --target folder (the guest's
    PYTHONPATH); a dependency this environment lacks is left to pip."""
    versions = pinned_wheels()
    key = ",".join(f"{name}=={version}" for name, version in sorted(versions.items()))
    site = os.path.join(directory, f"site-py{GUEST_PYTHON}-"
                                   f"{hashlib.sha256(key.encode()).hexdigest()[:12]}")
    if os.path.isdir(site):
        return site, versions
    temporary = _fresh(site)
    log(f"pip: aarch64 wheels of {', '.join(f'{n} {v}' for n, v in versions.items() if v)}")
    platforms = [f"manylinux_2_{minor}_aarch64" for minor in range(17, GUEST_GLIBC_MINOR + 1)]
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "--no-warn-conflicts", "--target", temporary, "--only-binary=:all:",
          "--implementation", "cp", "--python-version", GUEST_PYTHON,
          *(f"--platform={platform}" for platform in [*platforms, "manylinux2014_aarch64"]),
          *(f"{name}=={version}" if version else name for name, version in versions.items())],
         "pip install (aarch64 wheels)")
    os.rename(temporary, site)
    return site, versions


def plugin_header(directory: str, version: str, log: Callable[[str], None]) -> str:
    """qemu-plugin.h of Debian's QEMU source package `version`, fetched with a private apt
    configuration (deb-src lines for the suite, its updates and security) into `directory`."""
    source = os.path.join(directory, f"qemu-source-{version.replace(':', '_')}")
    header = os.path.join(source, os.path.basename(PLUGIN_HEADER))
    if os.path.isfile(header):
        return header
    temporary = _fresh(source)
    log(f"apt-get source --download-only qemu={version}")
    lists = os.path.join(temporary, "apt", "lists")
    os.makedirs(os.path.join(lists, "partial"))
    sources = os.path.join(temporary, "apt", "sources.list")
    with open(sources, "w", encoding="ascii") as file:
        for mirror, suite in ((MIRROR, SUITE), (MIRROR, f"{SUITE}-updates"),
                              (SECURITY_MIRROR, f"{SUITE}-security")):
            file.write(f"deb-src [signed-by={KEYRING}] {mirror} {suite} main\n")
    options = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/nonexistent",
               "-o", f"Dir::State::Lists={lists}", "-o",
               f"Dir::Cache={os.path.join(temporary, 'apt', 'cache')}"]
    _run(["apt-get", "-q", *options, "update"], "apt-get update (deb-src)")
    _run(["apt-get", "-q", *options, "source", "--download-only", f"qemu={version}"],
         f"apt-get source qemu={version}", cwd=temporary)
    archives = [name for name in os.listdir(temporary) if name.endswith(".orig.tar.xz")]
    if not archives:
        raise SetupError(f"apt-get source qemu={version} brought no .orig.tar.xz")
    with tarfile.open(os.path.join(temporary, archives[0])) as archive:
        member = next((m for m in archive if m.name.endswith("/" + PLUGIN_HEADER)), None)
        if member is None:
            raise SetupError(f"{archives[0]} has no {PLUGIN_HEADER}")
        with archive.extractfile(member) as file, \
                open(os.path.join(temporary, os.path.basename(PLUGIN_HEADER)), "wb") as target:
            shutil.copyfileobj(file, target)
    for name in os.listdir(temporary):  # keep the header only: the archive is 24 MB
        if name != os.path.basename(PLUGIN_HEADER):
            path = os.path.join(temporary, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.rename(temporary, source)
    return header


def plugin(directory: str, version: str, log: Callable[[str], None]) -> str:
    """insn_count.c compiled against the plugin header of QEMU `version`; named by both, so
    that an edit of the source or a QEMU update builds it again."""
    header = plugin_header(directory, version, log)
    with open(PLUGIN_SOURCE, "rb") as file:
        digest = hashlib.sha256(file.read() + version.encode()).hexdigest()[:12]
    library = os.path.join(directory, "plugin", f"insn_count-{digest}.so")
    if os.path.isfile(library):
        return library
    os.makedirs(os.path.dirname(library), exist_ok=True)
    log(f"gcc: {os.path.relpath(PLUGIN_SOURCE)} -> {library}")
    _run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-Wno-unused-parameter",
          "-I", os.path.dirname(header), "-o", f"{library}.partial", PLUGIN_SOURCE, "-lpthread"],
         "gcc (QEMU plugin)")
    os.rename(f"{library}.partial", library)
    return library


def setup(directory: str | None = None, log: Callable[[str], None] = print,
          install: bool = True) -> Setup:
    """Makes every piece present under `directory` (default_directory()), re-using those that
    are; raises SetupError naming the step that cannot be done. With install=False (the tests:
    no network at run time) nothing is installed or downloaded: the first missing piece raises
    SetupError."""
    if not install:
        def log(step: str) -> None:  # every step announces itself before it does any work
            raise SetupError(f"not set up here (next step: {step}); run python -m "
                             "benchmark.arm_setup first")
    directory = os.path.abspath(directory or default_directory())
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise SetupError(f"cannot create {directory}: {error.strerror}") from None
    host_tools(log)
    version = qemu_version()
    root = userland(directory, log)
    site, versions = wheels(directory, log)
    library = plugin(directory, version, log)
    return Setup(directory, root, site, library, shutil.which("qemu-aarch64"), version, versions)


def main() -> None:
    ready = setup()
    print(f"ARM setup ready in {ready.directory}: qemu-user {ready.qemu_version}, "
          f"ai-edge-litert {ready.wheels['ai-edge-litert']}, numpy {ready.wheels['numpy']}")


if __name__ == "__main__":
    cli.run(main, "benchmark.arm_setup", (SetupError,))
