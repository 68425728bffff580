"""Training. `reslab.train(config, ...)` is the public API; see `loop.train`.

This package shares its name with that function, so the package itself is made callable:
`reslab.train(...)` trains whether or not the submodules were imported first.
"""
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> dict:
        from .loop import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
