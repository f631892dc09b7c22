"""Data augmentation as pure JAX functions, run inside the jitted train step.

The key comes from `fold_in(rng, step)`, so the augmentation of a batch is a
function of (seed, step) alone: deterministic, and the same after a resume.
Transforms are written for one example (H, W, C) and vmapped over the batch.
"""


import jax
import jax.numpy as jnp

from deepl.errors import suggest
from deepl.errors import UserError


def random_crop(rng: jax.Array, image: jax.Array, *, pad: int = 4) -> jax.Array:
  """Pads with zeros by `pad` on each side, then crops back to (H, W) at random.

  Zero padding (not reflection) is the classic CIFAR recipe: the shifted-in
  border is black, so the crop is a pure translation by up to `pad` pixels.
  """
  height, width, _ = image.shape
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  dy, dx = jax.random.randint(rng, (2,), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice(padded, (dy, dx, 0),
                               (height, width, image.shape[2]))


def random_flip(rng: jax.Array, image: jax.Array) -> jax.Array:
  """Mirrors left-right with probability 0.5."""
  return jnp.where(jax.random.bernoulli(rng), image[:, ::-1], image)


def random_crop_flip(rng: jax.Array, image: jax.Array, *,
                     pad: int = 4) -> jax.Array:
  """`random_crop` then `random_flip` on one (H, W, C) image; keeps the dtype."""
  crop_rng, flip_rng = jax.random.split(rng)
  return random_flip(flip_rng, random_crop(crop_rng, image, pad=pad))


# 'crop' without the flip is for digits, where a mirrored 2 is not a 2.
# 'inception_crop' runs on the host as encoded images are decoded
# (deepl.data.images): nothing is left to do in the step.
AUGMENTATIONS = {
    'none': None,
    'crop': random_crop,
    'crop_flip': random_crop_flip,
    'inception_crop': None,
}


# Speech: SpecAugment's masks on the log-mel features the speech tasks compute
# in the step (deepl.data.audio_features.spec_augment).
AUDIO_AUGMENTATIONS = ('spec_augment',)


def check_name(name: str) -> None:
  known = [*AUGMENTATIONS, *AUDIO_AUGMENTATIONS]
  if name not in known:
    raise UserError(f'unknown augmentation {name!r}{suggest(name, known)}; '
                    f'known: {", ".join(known)}')


def check_kind(name: str, *, audio: bool) -> None:
  """UserError for an image augmentation on speech, or SpecAugment on images."""
  if name != 'none' and (name in AUDIO_AUGMENTATIONS) != audio:
    fits = AUDIO_AUGMENTATIONS if audio else [a for a in AUGMENTATIONS if a != 'none']
    raise UserError(f"data.augment='{name}' is for {'images' if audio else 'speech'}; this "
                    f"data set holds {'speech' if audio else 'images'}: use 'none' or "
                    f"{' or '.join(repr(a) for a in fits)}")


def augment_batch(rng: jax.Array, images: jax.Array, name: str) -> jax.Array:
  """Applies augmentation `name` to a (B, H, W, C) batch, one key per example."""
  check_name(name)
  transform = AUGMENTATIONS[name]
  if transform is None:
    return images
  keys = jax.random.split(rng, images.shape[0])
  return jax.vmap(transform)(keys, images)
