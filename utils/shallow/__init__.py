"""The shallow hashing baselines of the paper's Table 1, fitted on fixed image features (docs/methods.md): NumPy only,
no Paddle. Each method is one module; SHALLOW_METHODS holds them by their --method name."""
from utils.shallow.bre import BRE
from utils.shallow.itq import ITQ
from utils.shallow.itq_cca import ITQCCA
from utils.shallow.ksh import KSH
from utils.shallow.lsh import LSH
from utils.shallow.sdh import SDH
from utils.shallow.sh import SH

SHALLOW_METHODS = {method.name: method for method in (LSH, SH, ITQ, ITQCCA, BRE, KSH, SDH)}
