"""The local toolbox: everything that only helps on a developer's machine or in CI.

Starting the local services, the local stream runner, seeding, the bodies of
the bin/ scripts, and benchmark helpers. It imports `backend_flask`; the
shipped package never imports it, and the API image does not contain it.
"""
