"""brainage: brain age from 3D T1-weighted MRI with an interpretable ERMoE vision transformer.

Research use only, not for diagnosis.
"""

__version__ = "0.1.0"
