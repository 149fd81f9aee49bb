"""Build hook: compiles the native end of the forwarding path (``sfu/native/fanout.c``) into
``sfu/_fanout``, a CPython extension made with cffi, so that ``pip install`` builds it from
source (a C compiler and the Python headers are needed).

For an editable install the module is written next to the sources, where the checkout is
imported from; a wheel carries it as a file of its own.
"""

from __future__ import annotations

from typing import Any
from pathlib import Path
import os
import shutil
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
import cffi

NATIVE = Path(__file__).parent / "sfu" / "native"


def compile_fanout(destination: Path) -> Path:
    """Compile ``sfu._fanout`` and place it in ``destination`` (the ``sfu`` folder)."""
    ffi = cffi.FFI()
    ffi.cdef((NATIVE / "fanout.h").read_text())
    ffi.set_source(
        "sfu._fanout",
        '#include "fanout.h"',
        sources=[str(NATIVE / "fanout.c")],
        include_dirs=[str(NATIVE)],
        extra_compile_args=["-O2", "-Wall", "-Werror"],
    )
    with tempfile.TemporaryDirectory() as build:
        library = Path(ffi.compile(tmpdir=build))
        target = destination / library.name
        # A new file renamed over the old one: processes running the old one keep it intact.
        staged = destination / f".{library.name}.new"
        shutil.copyfile(library, staged)
        os.replace(staged, target)
    return target


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        library = compile_fanout(Path(self.root) / "sfu")
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(library)] = f"sfu/{library.name}"
