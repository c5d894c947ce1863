"""mmvision_ssm: vision state-space backbones (VMamba, MambaVision, MLLA, MViTv2, ViT) for
MMDetection 3.x and MMSegmentation 1.x.

The OpenMMLab stack needs mmcv 2.1.0 built from source for torch 2.14: use
``bash tools/install.sh`` rather than a bare ``pip install`` (see README.md).
"""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmvision_ssm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmvision_ssm',
    version=read_version(),
    description='Vision state-space and related backbones for MMDetection 3.x and MMSegmentation 1.x',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    # The backbones and scan ops need only these (they run without OpenMMLab installed).
    install_requires=[
        'torch>=2.1',
        'timm>=1.0.9',
        'numpy',
    ],
    extras_require={
        # The OpenMMLab stack; mmcv must be installed first (tools/install.sh builds it).
        'mm': [
            'mmengine==0.10.7',
            'mmcv==2.1.0',
            'mmdet==3.3.0',
            'mmsegmentation==1.2.2',
            'ftfy',          # mmseg imports these at start-up but does not declare them
            'regex',
            'pycocotools',
            'matplotlib',
            'Pillow',
        ],
        'tests': ['pytest>=7', 'pytest-timeout'],
    },
    include_package_data=True,
    # the CPU scan's C source, compiled on first use (mmvision_ssm/ops/scan_cpu.py)
    package_data={'mmvision_ssm.ops': ['scan_cpu.c']},
    zip_safe=False,
)
