"""Builds rtserver's Cython kernels and ships the pages; everything else is declared in
pyproject.toml."""

import shutil
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# The pages stay at the top of the repository (plain files, no build step); a wheel carries
# them inside the package, where rtserver.api.app looks first.
WEB_CLIENT = Path(__file__).resolve().parent / "web_client"


class BuildPyWithPages(build_py):
    """build_py, then web_client/ copied to rtserver/web_client in the build.

    Skipped for editable installs: those serve the checkout's web_client/ directly, so an
    edited page shows without reinstalling.
    """

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "rtserver" / "web_client"
        # From scratch: a page deleted from web_client/ must not live on in an old build.
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(WEB_CLIENT, target)


extensions = [
    Extension(
        "rtserver.kernels.frame",
        ["rtserver/kernels/frame.pyx"],
        include_dirs=[numpy.get_include()],
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    cmdclass={"build_py": BuildPyWithPages},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
