"""`python -m deepl.main` is the `deepl` command, as it was before deepl/cli/ held it."""

from deepl.cli.main import program

if __name__ == '__main__':
  program()
