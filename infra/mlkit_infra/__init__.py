"""mlkit's infrastructure as code: the Pulumi program of ``infra/``.

``config`` validates the stack config, ``gcp`` declares the network and the
private GKE cluster, ``k8s`` the provider and the Kubernetes objects that
``mlkit.deploy`` builds, ``program`` ties them together, and ``mocks`` runs the
program under Pulumi's test mocks. Importing this package declares nothing.
"""
