"""Maps the `agentmesh` namespace package onto its three source roots.

pyproject.toml holds all metadata; this file only exists because setuptools'
declarative package discovery cannot spread one namespace over several roots.
"""

from __future__ import annotations

from setuptools import find_namespace_packages, setup

SOURCE_ROOTS = ("protos", "services", "gateway")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in SOURCE_ROOTS:
    for package in find_namespace_packages(root, include=["agentmesh.*"]):
        packages.append(package)
        package_dir[package] = f"{root}/{package.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
