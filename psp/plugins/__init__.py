"""PartySIP's plugin chain and its built-in plugins (see docs/plugins.md).

``base`` is the plugin API, ``chain`` loads and runs the chain; the other modules are the
built-ins, named as in the original: syntax, auth, rgstrar, ls_localdb, ls_sfull,
ls_static, filter, groups.
"""
