"""The retrying API proxy in front of helm: the real helm binary and the real kubernetes
client through it, to the real API server, with faults injected by the test proxy in front of
it (``kube_faults``: the helm proxy forwards to whatever server its kubeconfig names).

Covers: helm upgrade --install getting through a row of 500s that make helm fail on its own;
429s retried with Retry-After; a create with ``generateName`` never repeated after a 500, a
named create repeated; a watch streamed through; no token, a wrong token and a closed
session's token refused; an unreachable API server answered with a clear 503 Status after
the retries; the session's counts; ``for_helm`` with retries off handing out the worker's own
kubeconfig; a worker whose kubeconfig is a ServiceAccount *token* under RBAC deploying through
the proxy (its token forwarded upstream), and refused outside the namespace its Role covers.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch

from k8see.errors import HelmError
from k8see.integrations import helm, kubeapi, kubeproxy
from k8see.settings import PlatformSettings
from tests.conftest import ROOT, free_port, require_tool
from tests.fixtures.kube import RUN_ID

CHART = ROOT / "charts" / "k8s-ee-app"
LOG = logging.getLogger("test-kubeproxy")


#: The image the releases run: the test app, by digest (set from ``testapp_image`` below).
IMAGE = {"repository": "reg.test/acme/proxyt", "digest": "sha256:" + "d" * 64}


@pytest.fixture(autouse=True)
def _image(request: pytest.FixtureRequest) -> None:
    if "kubeconfig" in request.fixturenames:
        repository, digest = request.getfixturevalue("testapp_image")
        IMAGE.update(repository=repository, digest=digest)


@pytest.fixture
def settings(kubeconfig: str) -> PlatformSettings:
    return PlatformSettings.model_validate({"deploy": {"kubeconfig": kubeconfig}})


@pytest.fixture
def proxy(kube_faults: Any) -> Iterator[kubeproxy.ApiProxy]:
    """The helm proxy, forwarding to the fault-injecting proxy in front of the API server."""
    faulty = PlatformSettings.model_validate({"deploy": {"kubeconfig": kube_faults.kubeconfig}})
    proxy = kubeproxy.ApiProxy(kubeapi.load_configuration(faulty), max_retries=5)
    yield proxy
    proxy.close()


def _core(kubeconfig: str) -> tuple[Any, client.CoreV1Api]:
    api = config.new_client_from_config(config_file=kubeconfig)
    return api, client.CoreV1Api(api)


def _values(pr: int) -> dict[str, Any]:
    return {
        "projectId": "proxyt",
        "prNumber": pr,
        "commitSha": "c" * 40,
        "previewDomain": "preview.test",
        "image": {**IMAGE, "tag": f"pr-{pr}"},
    }


def _install(kubeconfig: str, namespace: str, pr: int) -> helm.ReleaseStatus:
    return helm.upgrade_install(
        release="app",
        chart=CHART,
        namespace=namespace,
        values=_values(pr),
        timeout_seconds=60,
        kubeconfig=kubeconfig,
        log=LOG,
    )


def test_helm_gets_through_500s_that_fail_it_on_its_own(
    kube_faults: Any, kube_namespace: str, proxy: kubeproxy.ApiProxy, faults: Any
) -> None:
    require_tool("helm")
    # Given an API server whose next three answers are 500 without Retry-After
    faults.sequence = [500, 500, 500]
    # When helm talks to it directly, Then the first 500 fails the upgrade
    with pytest.raises(HelmError):
        _install(kube_faults.kubeconfig, kube_namespace, 1)
    assert faults.injected >= 1
    # When helm goes through the proxy instead, Then the same row of 500s is absorbed
    faults.reset()
    faults.sequence = [500, 500, 500]
    with proxy.session() as session:
        release = _install(session.kubeconfig, kube_namespace, 1)
    assert release.status == "deployed"
    assert faults.injected == 3
    assert session.retried == {500: 3}
    assert session.requests > 3
    assert session.summary()["retried"] == {"500": 3}


def test_a_fifth_of_requests_failing_costs_retries_not_the_release(
    kube_namespace: str, proxy: kubeproxy.ApiProxy, faults: Any
) -> None:
    require_tool("helm")
    faults.statuses = (500, 429, 503)
    faults.error_rate = 0.2
    with proxy.session() as session:
        release = _install(session.kubeconfig, kube_namespace, 2)
        faults.error_rate = 0.0
        assert helm.uninstall(
            release="app", namespace=kube_namespace, kubeconfig=session.kubeconfig
        )
    assert release.status == "deployed"
    assert faults.injected > 0
    assert session.retries == faults.injected


def test_a_create_with_a_generated_name_is_never_repeated_after_a_500(
    kube_namespace: str, proxy: kubeproxy.ApiProxy, faults: Any
) -> None:
    with proxy.session() as session:
        api, core = _core(session.kubeconfig)
        try:
            # Given a 500 on the next request, When a create asks for a generated name
            faults.sequence = [500]
            generated = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-"))
            # Then the 500 reaches the client: a repeat could have made a second object
            with pytest.raises(client.ApiException) as caught:
                core.create_namespaced_config_map(kube_namespace, generated)
            assert caught.value.status == 500
            # But a 429 is repeated even then (the server did not act on the request)
            faults.sequence = [429]
            made = core.create_namespaced_config_map(kube_namespace, generated)
            assert made.metadata.name.startswith("gen-")
            # And a named create is repeated after a 500
            faults.sequence = [500]
            named = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="named"))
            core.create_namespaced_config_map(kube_namespace, named)
        finally:
            api.close()
    assert session.retried == {429: 1, 500: 1}


def test_a_watch_streams_through(kube_namespace: str, proxy: kubeproxy.ApiProxy) -> None:
    with proxy.session() as session:
        api, core = _core(session.kubeconfig)
        seen: list[str] = []
        stream = watch.Watch()
        started = threading.Event()

        def follow() -> None:
            started.set()
            for event in stream.stream(
                core.list_namespaced_config_map, kube_namespace, timeout_seconds=20
            ):
                seen.append(f"{event['type']} {event['object'].metadata.name}")
                if event["object"].metadata.name == "watched":
                    stream.stop()

        thread = threading.Thread(target=follow)
        thread.start()
        started.wait()
        core.create_namespaced_config_map(
            kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"))
        )
        thread.join(timeout=30)
        api.close()
    assert "ADDED watched" in seen


def test_requests_without_a_live_token_are_refused(
    proxy: kubeproxy.ApiProxy, tmp_path: Path
) -> None:
    url = f"https://127.0.0.1:{proxy.port}/api/v1/namespaces"
    context = _trusting(proxy)
    with proxy.session() as session:
        token = session.token
        assert oct(Path(session.kubeconfig).stat().st_mode & 0o777) == "0o600"
        assert _get(url, context, token) == 200
        assert _get(url, context, None) == 401
        assert _get(url, context, token[:-2] + "xx") == 401
    # When the session ends, Then its token is refused and its kubeconfig is gone
    assert _get(url, context, token) == 401
    assert not Path(session.kubeconfig).exists()


def test_an_unreachable_api_server_is_a_clear_503_after_the_retries(
    settings: PlatformSettings,
) -> None:
    configuration = kubeapi.load_configuration(settings)
    configuration.host = f"http://127.0.0.1:{free_port()}"
    proxy = kubeproxy.ApiProxy(configuration, max_retries=2)
    try:
        with proxy.session() as session:
            api, core = _core(session.kubeconfig)
            with pytest.raises(client.ApiException) as caught:
                core.list_namespace()
            api.close()
    finally:
        proxy.close()
    assert caught.value.status == 503
    assert "could not reach the API server" in str(caught.value.body)
    assert session.summary()["retried"] == {"connection": 2}


def test_with_retries_off_helm_gets_the_workers_own_kubeconfig(kubeconfig: str) -> None:
    settings = PlatformSettings.model_validate(
        {"deploy": {"kubeconfig": kubeconfig, "helm_api_retries": 0}}
    )
    with kubeproxy.for_helm(settings) as session:
        assert session.kubeconfig == kubeconfig
    settings = PlatformSettings.model_validate({"deploy": {"kubeconfig": kubeconfig}})
    with kubeproxy.for_helm(settings) as first, kubeproxy.for_helm(settings) as second:
        # one listener per process: the same server address, different tokens
        assert first.kubeconfig != second.kubeconfig
        assert first.token != second.token
        assert _server(first.kubeconfig) == _server(second.kubeconfig)


def _service_account_kubeconfig(
    api: Any, namespace: str, path: Path, *, rules: list[dict[str, Any]]
) -> str:
    """A kubeconfig of a new ServiceAccount in ``namespace`` holding a Role with ``rules``
    there: the real API server's address and CA, and a bearer token (no client certificate),
    as a worker outside the cluster would have."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "deployer"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "deployer"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "deployer"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "deployer",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "deployer", namespace, {"spec": {"audiences": []}}
    ).status.token
    cluster = {
        "server": api.configuration.host,
        "certificate-authority": api.configuration.ssl_ca_cert,
    }
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "deployer", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "deployer"}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return str(path)


def test_a_service_account_token_deploys_through_the_proxy_under_rbac(
    kube_api_client: Any, kube_namespace: str, tmp_path: Path
) -> None:
    require_tool("helm")
    # Given a worker whose kubeconfig is a ServiceAccount token, allowed by a Role to do
    # anything in one namespace and nothing elsewhere
    kubeconfig = _service_account_kubeconfig(
        kube_api_client,
        kube_namespace,
        tmp_path / "kubeconfig",
        rules=[{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    )
    settings = PlatformSettings.model_validate({"deploy": {"kubeconfig": kubeconfig}})
    # When helm deploys through the proxy in its name
    with kubeproxy.for_helm(settings) as session:
        release = _install(session.kubeconfig, kube_namespace, 6)
        # Then the release is deployed: the proxy sent the worker's token upstream
        assert release.status == "deployed"
        # And the API server saw the service account, not someone with more rights
        other = f"proxyt{RUN_ID}-elsewhere"
        with pytest.raises(HelmError):
            helm.upgrade_install(
                release="app",
                chart=CHART,
                namespace=other,
                values=_values(6),
                timeout_seconds=20,
                kubeconfig=session.kubeconfig,
                log=LOG,
            )
        assert helm.uninstall(
            release="app", namespace=kube_namespace, kubeconfig=session.kubeconfig
        )
    assert session.retries == 0


def _server(kubeconfig: str) -> str:
    import yaml

    return str(yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"])


def _trusting(proxy: kubeproxy.ApiProxy) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(proxy.directory / "tls.crt"))


def _get(url: str, context: Any, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
