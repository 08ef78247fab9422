from setuptools import find_packages, setup

setup(
    name="sparseconv",
    version="0.1.0",
    description="Sparse 3D convolution for point clouds in pure PyTorch: exact dense-twin semantics, CPU and GPU.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sparseconv", "sparseconv.*"]),
    install_requires=["torch>=2.1", "numpy", "scipy", "tqdm", "pillow"],
    extras_require={
        "test": ["pytest>=7", "open3d>=0.18", "laspy", "numba>=0.60", "triton>=3.0; platform_system == 'Linux'"],
        "gpu": ["triton>=3.0; platform_system == 'Linux'"],
        "fast": ["numba>=0.60"],
        "io": ["open3d>=0.18"],
        "las": ["laspy[lazrs]"],
    },
    entry_points={"console_scripts": ["sparseconv = sparseconv.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
