"""Build hook: the gateway's wheel carries the JavaScript client's modules for the playground.

clients/js/src (the npm package `sluice-client`, kept in one place) is copied to
playground/sluice-client/ inside the built package, where `playground.client_dir()`
finds it in an installed gateway; a checkout serves clients/js/src itself. All other
build settings are in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

JS_CLIENT = Path(__file__).resolve().parent / "clients" / "js" / "src"


class BuildWithJsClient(build_py):
    """`build_py`, then the JavaScript client's ES modules into playground/sluice-client."""

    def run(self) -> None:
        """Build the Python packages; copy the JS client beside the playground's files."""
        super().run()
        if JS_CLIENT.is_dir() and not self.editable_mode:
            target = Path(self.build_lib) / "playground" / "sluice-client"
            shutil.copytree(JS_CLIENT, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithJsClient})
