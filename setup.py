"""Packaging glue: the top-level ``conf/`` folder ships as the ``yolor_lightning.conf`` package."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["yolor_lightning", "yolor_lightning.*"]),
        "yolor_lightning.conf",
    ],
    package_dir={"yolor_lightning.conf": "conf"},
)
