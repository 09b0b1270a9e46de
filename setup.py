"""pip install of cross4d's Python code (usable without ROS).

The ROS package (messages, executables, launch files) is built with colcon from
package.xml / CMakeLists.txt; this file only installs `cross4d_core`, `cross4d_ros`
and the `cross4d` command.
"""
from setuptools import find_packages, setup

setup(
    name="cross4d",
    version="0.1.0",
    description="Cross4D-JEPA: 4D point-cloud encoders distilled from frozen 2D foundation models",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["cross4d_core", "cross4d_core.*", "cross4d_ros", "cross4d_ros.*"]),
    package_data={"cross4d_core": ["py.typed", "configs/train/*.yaml"]},  # read with importlib.resources
    install_requires=[
        "numpy>=1.24",
        "torch>=2.3",
        "transformers>=4.53",  # VJEPA2Model
        "safetensors>=0.4",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "pyyaml>=6",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "h5py>=3.8",
    ],
    entry_points={"console_scripts": ["cross4d = cross4d_core.cli:main"]},
)
