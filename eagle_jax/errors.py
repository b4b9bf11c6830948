"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class EagleError(Exception):
  """A problem the user can fix: bad input file, unknown config key, missing model.

  The message must name the file/row/key/flag and say what was expected.
  """
