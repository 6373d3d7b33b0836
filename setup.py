from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="txheartbeat",
    version="0.3.1",
    description="Heartbeat, dead-peer detection and auto-reconnect for Twisted/Autobahn WebSocket clients",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["txheartbeat", "txheartbeat.*"]),
    package_data={"txheartbeat": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "twisted[tls]>=22.10",
        "autobahn>=22.4",
        "txaio>=21.2",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-twisted>=1.14",
            "hypothesis>=6",
            "websockets>=12",
            "prometheus-client>=0.17",
            "pydoctor>=23.9",
        ],
        "docs": ["pydoctor>=23.9"],
        "prometheus": ["prometheus-client>=0.17"],
        "lint": ["ruff>=0.4", "mypy>=1.8", "mypy-zope>=1.0"],
    },
    entry_points={"console_scripts": ["txheartbeat = txheartbeat._cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
    ],
)
