"""The build's object cache (Note [object cache] in CMakeLists.txt): an object is reused only when
the same command compiles the same source tree with the same compiler."""
import os
import pathlib
import stat
import subprocess
import sys

import pytest

from source_tree import source_path

FAKE_COMPILER = """#!{python}
import sys
args = sys.argv[1:]
out, dep, src = (args[args.index(flag) + 1] for flag in ("-o", "-MF", "-c"))
with open({calls!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
text = open(src).read()
if "error" in text:
    sys.exit(3)
open(out, "w").write("object of " + text + " with " + " ".join(a for a in args if a.startswith("-O")))
open(dep, "w").write(out + ": " + src + "\\n")
"""


def _script():
    return source_path("cmake/object_cache.py")


class Build:
    def __init__(self, tmp):
        self.script = _script()
        self.tree = tmp / "csrc"
        self.tree.mkdir()
        (self.tree / "a.cpp").write_text("int a;")
        (self.tree / "a.h").write_text("// header")
        self.calls = tmp / "calls.txt"
        self.cc = tmp / "cc"
        self.cc.write_text(FAKE_COMPILER.format(python=sys.executable, calls=str(self.calls)))
        self.cc.chmod(self.cc.stat().st_mode | stat.S_IXUSR)
        self.cache = tmp / "object-cache"
        self.obj = tmp / "a.o"

    def compile(self, *flags, env=None):
        dep = f"{self.obj}.d"
        cmd = [sys.executable, str(self.script), str(self.cache), str(self.tree), str(self.cc),
               *flags, "-MD", "-MF", dep, "-o", str(self.obj), "-c", str(self.tree / "a.cpp")]
        return subprocess.run(cmd, env=env).returncode

    def compiles(self):
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def wipe(self):
        """What scikit-build-core's fresh environment does to CMakeFiles/."""
        self.obj.unlink()
        pathlib.Path(f"{self.obj}.d").unlink()


def test_same_command_and_tree_reuse_the_object_and_its_depfile(tmp_path):
    b = Build(tmp_path)
    assert b.compile("-O3") == 0 and b.compiles() == 1
    first, dep = b.obj.read_text(), pathlib.Path(f"{b.obj}.d").read_text()
    b.wipe()
    assert b.compile("-O3") == 0 and b.compiles() == 1
    assert b.obj.read_text() == first and pathlib.Path(f"{b.obj}.d").read_text() == dep


@pytest.mark.parametrize("change", ["source", "header", "new file", "flags", "compiler",
                                    "include path from the environment"])
def test_any_change_of_command_tree_or_compiler_compiles_again(tmp_path, change):
    b = Build(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "CPATH"}
    assert b.compile("-O3", env=env) == 0
    flags = ("-O3",)
    if change == "source":
        (b.tree / "a.cpp").write_text("int a = 1;")
    elif change == "header":
        (b.tree / "a.h").write_text("// header, edited")
    elif change == "new file":
        (b.tree / "b.h").write_text("")
    elif change == "flags":
        flags = ("-O2",)
    elif change == "compiler":
        b.cc.write_text(b.cc.read_text() + "\n# a new compiler build\n")
    else:
        env["CPATH"] = str(tmp_path)
    b.wipe()
    assert b.compile(*flags, env=env) == 0 and b.compiles() == 2
    if change == "source":
        assert "int a = 1;" in b.obj.read_text()
    if change == "flags":
        assert b.obj.read_text().endswith("-O2")
    # One entry (object and depfile) per output: the older one is gone.
    assert len(os.listdir(b.cache)) == 2


def test_a_failed_compile_stores_nothing(tmp_path):
    b = Build(tmp_path)
    (b.tree / "a.cpp").write_text("error")
    assert b.compile("-O3") == 3
    assert not b.cache.exists() or os.listdir(b.cache) == []
    assert b.compile("-O3") == 3 and b.compiles() == 2
