"""Build glue that pyproject.toml cannot express.

1. ``tasks/`` and ``baselines/`` ship as ``dep_eval.tasks`` and ``dep_eval.baselines`` so that
   nothing generic named ``tasks`` or ``baselines`` lands in site-packages.
2. ``dep_eval/checkpoints`` (data only, no ``__init__.py``) is a package of its own, so that
   setuptools ships its files as that package's data instead of warning that Python could
   import a folder the ``packages`` list leaves out.
3. ``dep_eval_lm_eval.pth`` (one import line) goes to site-packages so that plain ``lm_eval``
   sees this package's models and tasks; see ``dep_eval/_lm_eval_hook.py``.
"""

import warnings
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel
from setuptools.warnings import InformationOnly

PTH = "dep_eval_lm_eval.pth"
MAPPED = {"dep_eval.tasks": "tasks", "dep_eval.baselines": "baselines"}
DATA_PACKAGES = ["dep_eval.checkpoints"]  # files listed in pyproject's package-data


def packages() -> list[str]:
    found = find_packages(include=["dep_eval", "dep_eval.*"]) + DATA_PACKAGES
    for name, folder in MAPPED.items():
        found += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    return found


def package_dir() -> dict[str, str]:
    mapping = {"dep_eval": "dep_eval"}
    for name, folder in MAPPED.items():
        mapping[name] = folder
        for sub in find_packages(folder):
            mapping[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return mapping


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(PTH, str(Path(self.build_lib) / PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


class EditableWheelWithPth(editable_wheel):
    """``pip install -e .`` gets the same start-up hook as a normal install."""

    def _select_strategy(self, name, tag, build_lib):
        strategy = super()._select_strategy(name, tag, build_lib)
        original_call = strategy.__call__

        class WithPth(type(strategy)):
            def __call__(self, wheel, files, mapping):
                original_call(wheel, files, mapping)
                wheel.writestr(PTH, Path(PTH).read_bytes())

            def __exit__(self, *exc_info: object) -> None:
                # setuptools' "Editable installation" notice (a folder named like a package
                # in the working directory may shadow it) is information, not a problem
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", InformationOnly)
                    super().__exit__(*exc_info)

        strategy.__class__ = WithPth
        return strategy


setup(
    packages=packages(),
    package_dir=package_dir(),
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
)
