from setuptools import find_packages, setup

setup(
    name="jobsched",
    version="0.1.0",
    description="A distributed batch-job scheduler on Twisted and Raft",
    python_requires=">=3.11",
    packages=[*find_packages(include=["jobsched", "jobsched.*"]), "twisted.plugins"],
    package_data={"jobsched.api": ["dashboard/*"]},
    install_requires=[
        "twisted==26.10.0",
        "grpcio==1.85.1",
        "protobuf==7.36.2",
        "klein==24.8.0",
        "treq==26.7.0",
        "docker==7.2.0",
        "zope.interface==8.7",
        # the CLI: colour, terminal detection and the spinner (rich); cell widths and
        # grapheme clusters for aligned, safely cut table columns (wcwidth)
        "rich==15.0.0",
        "wcwidth==0.9.4",
        "cryptography==50.0.2",  # certificates: jobsched certs, node identities
        "pyOpenSSL==26.4.0",  # HTTPS for REST (twisted's TLS)
        "prometheus-client==0.26.0",  # /metrics: histograms, counters, the exposition format
        "uvloop==0.23.0",  # the gRPC server's event loop: libuv's, in C (performance.md)
    ],
    extras_require={
        "test": [
            "grpcio-tools==1.85.1",
            "pytest==9.2.0",
            "import-linter==2.16",
            "ruff==0.17.5",
            "coverage==7.17.3",
            "selenium==4.51.0",
            "hypothesis==6.170.15",
            "service-identity==26.1.0",  # the tests' HTTPS client checks host names
        ],
    },
    entry_points={"console_scripts": ["jobsched = jobsched.cli.main:main"]},
)
