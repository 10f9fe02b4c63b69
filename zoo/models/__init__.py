"""One module per family; importing it registers the family's variants in timm's registry."""
from . import swin
from . import nat
from . import biformer, litv2
from . import cswin
from . import agent
from . import inline
from . import focalnet, poolformer, shvit
from . import maxvit, davit, convit
from . import l2vit
