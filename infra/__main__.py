"""Entry point of the Pulumi program (``pulumi up`` runs this file from infra/).

Everything lives in the importable package ``mlkit_infra``, so the tests run
the same code under Pulumi's mocks; see infra/README.md.
"""

from mlkit_infra.program import main

main()
