"""The diffusion domain: a DDPM and a rectified flow pretrained on the digits, their
denoising chains as environments (`rollax/DiffusionDigit-v0`, `rollax/FlowDigit-v0`), the
denoiser as the policy (kind "denoiser") and the batch source of sampled chains. It builds on
the digits domain (`rollax.generative`: data, reward, judge). Importing the package registers
its env ids, policy kind and batch source (no jax); every other name loads on first use."""

from rollax.diffusion import ids  # noqa: F401  (registers the env ids, policy kind and source)
from rollax.lazy import lazy_exports

_NAMES = {
    "Denoiser": "rollax.diffusion.models",
    **dict.fromkeys(("DDIMSampler", "FlowSampler"), "rollax.diffusion.samplers"),
    **dict.fromkeys(("DenoiserConfig", "load_denoiser"), "rollax.diffusion.pretrained"),
    **dict.fromkeys(("DenoisingChain", "to_images"), "rollax.diffusion.env"),
    "DenoiserPolicy": "rollax.diffusion.policy",
    **dict.fromkeys(("Chains", "sample_chains"), "rollax.diffusion.source"),
}
__getattr__, __dir__ = lazy_exports(globals(), _NAMES)
__all__ = [
    "Chains",
    "DDIMSampler",
    "Denoiser",
    "DenoiserConfig",
    "DenoiserPolicy",
    "DenoisingChain",
    "FlowSampler",
    "load_denoiser",
    "sample_chains",
    "to_images",
]
