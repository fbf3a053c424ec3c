"""Runtime shell of the KDSR / PDD BasicSR plugin: BasicSR mends, shared library modules and the commands.

Importing this package only arranges that ``import basicsr`` works on today's torchvision (a lazy import
alias, :func:`kdsr_pdd.compat.install_functional_tensor_alias`); :mod:`kdsr_pdd.plugin` registers the
method packages (:mod:`kdsr_arch`, :mod:`pdd_model`) into BasicSR's registries, and the commands under
:mod:`kdsr_pdd.commands` import what they use.
"""
from kdsr_pdd.compat import install_functional_tensor_alias

install_functional_tensor_alias()

__version__ = '0.2.0'
