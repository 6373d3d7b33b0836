import re

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()
# The version lives in one place: txheartbeat/__init__.py.
with open("txheartbeat/__init__.py", encoding="utf-8") as f:
    (version,) = re.findall(r'^__version__ = "([^"]+)"$', f.read(), re.M)

setup(
    name="txheartbeat",
    version=version,
    description="Heartbeat, dead-peer detection and auto-reconnect for Twisted/Autobahn WebSocket clients",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    packages=find_packages(include=["txheartbeat", "txheartbeat.*"]),
    package_data={"txheartbeat": ["py.typed", "static/*.js"]},
    python_requires=">=3.10",
    # The floors are tested: CI runs the suite on them (.ci/constraints-floor.txt) on Python 3.10.
    install_requires=[
        "twisted[tls]>=22.10.0",
        "autobahn>=22.4.2",
        "txaio>=21.2.1",
    ],
    extras_require={
        "test": [
            "pytest>=7.0.0",
            "pytest-twisted>=1.14.0",
            "hypothesis>=6.0.0",
            "websockets>=15.0",
            "prometheus-client>=0.17.0",
            "pydoctor>=23.9.0",
        ],
        "docs": ["pydoctor>=23.9.0"],
        "prometheus": ["prometheus-client>=0.17.0"],
        # The Redis session store needs no package: its RESP2 client is ours (docs/sessions.md says why).
        "redis": [],
        "lint": ["ruff>=0.4", "mypy>=1.8", "mypy-zope>=1.0"],
    },
    entry_points={"console_scripts": ["txheartbeat = txheartbeat._cli:main"]},
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
        "Topic :: Software Development :: Libraries :: Python Modules",
        "Typing :: Typed",
    ],
    keywords=["twisted", "autobahn", "websocket", "heartbeat", "keepalive", "reconnect"],
)
