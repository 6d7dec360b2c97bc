"""Code reviewer agent: static complexity and security checks for Python source."""
