"""Offline inputs for the builders: find, check and explain files in manual_dir.

TFDS's own manual_dir support falls through to a network download when a file
is missing, which here means a ~3.5 minute hang. These helpers make a missing or
corrupt file one clear `UserError` instead, and never touch the network.
"""

import hashlib

from etils import epath

from deepl.errors import UserError


def given_manual_dir(dl_manager) -> epath.Path | None:
  """Returns the manual_dir the user passed in DownloadConfig, else None.

  TFDS fills in `<download_dir>/manual` when none is given, and its public
  `manual_dir` property cannot tell "not given" from "given but missing", which
  is the case that must not go to the network. So read the private field.
  """
  manual_dir = getattr(dl_manager, '_manual_dir', None)
  if manual_dir is None:
    return None
  manual_dir = epath.Path(manual_dir)
  if manual_dir == epath.Path(dl_manager.download_dir) / 'manual':
    return manual_dir if manual_dir.exists() else None
  return manual_dir


def sha256(path: epath.PathLike) -> str:
  digest = hashlib.sha256()
  with epath.Path(path).open('rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def check_files(manual_dir: epath.PathLike, expected: dict[str, str], *,
                fix: str) -> dict[str, epath.Path]:
  """Checks that manual_dir holds each file with its sha256.

  Args:
    manual_dir: the folder the user pointed at.
    expected: file name -> sha256.
    fix: how to get the right files, appended to the error.

  Returns:
    file name -> path.

  Raises:
    UserError: the folder or a file is missing, or a checksum differs.
  """
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.is_dir():
    raise UserError(f'manual_dir {manual_dir} is not a folder: {fix}')
  paths = {}
  for name, want in expected.items():
    path = manual_dir / name
    if not path.exists():
      raise UserError(f'manual_dir {manual_dir} has no {name}: {fix}')
    got = sha256(path)
    if got != want:
      raise UserError(
          f'{path} has sha256 {got[:12]}..., expected {want[:12]}... '
          f'(corrupt or a different file): {fix}')
    paths[name] = path
  return paths


def expected_from_url_infos(url_infos, urls) -> dict[str, str]:
  """file name -> sha256 for the given URLs, from the builder's checksums.tsv."""
  return {url.rsplit('/', 1)[-1]: url_infos[url].checksum for url in urls}
