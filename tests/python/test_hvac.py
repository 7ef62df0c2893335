"""The hvac client's Azure secrets methods against the plugin (OpenBao + emulator)."""

import hvac
import pytest
import requests


def configure(bao, emulator):
    bao.secrets.azure.configure(
        subscription_id=emulator["AZURE_SUBSCRIPTION_ID"],
        tenant_id=emulator["AZURE_TENANT_ID"],
        client_id=emulator["AZURE_CLIENT_ID"],
        client_secret=emulator["AZURE_CLIENT_SECRET"],
        environment="AzurePublicCloud",
    )


def token_status(emulator, client_id, secret):
    url = f"{emulator['AZURE_AUTHORITY_HOST']}{emulator['AZURE_TENANT_ID']}/oauth2/v2.0/token"
    resp = requests.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": f"{emulator['AZURE_GRAPH_ENDPOINT']}/.default",
        },
        verify=emulator["SSL_CERT_FILE"],
        timeout=10,
    )
    return resp.status_code


def admin_state(emulator):
    return requests.get(f"{emulator['EMULATOR_ADMIN']}/state", timeout=10).json()


def test_configure_and_read_config(bao, emulator):
    configure(bao, emulator)
    config = bao.secrets.azure.read_config()
    assert config["tenant_id"] == emulator["AZURE_TENANT_ID"]
    assert config["subscription_id"] == emulator["AZURE_SUBSCRIPTION_ID"]
    assert config["client_id"] == emulator["AZURE_CLIENT_ID"]
    assert config["environment"] == "AzurePublicCloud"
    assert "client_secret" not in config


def test_roles_credentials_and_revocation(bao, emulator):
    configure(bao, emulator)
    sub = emulator["AZURE_SUBSCRIPTION_ID"]
    bao.secrets.azure.create_or_update_role(
        name="hvac-role",
        azure_roles=[
            {"role_name": "Reader", "scope": f"/subscriptions/{sub}"},
            {"role_name": "Contributor", "scope": f"/subscriptions/{sub}/resourceGroups/vault-rg"},
        ],
        ttl="1h",
        max_ttl="2h",
    )
    assert "hvac-role" in bao.secrets.azure.list_roles()["keys"]

    creds = bao.secrets.azure.generate_credentials(name="hvac-role")
    assert creds["client_id"]
    assert token_status(emulator, creds["client_id"], creds["client_secret"]) == 200
    apps = [a for a in admin_state(emulator)["applications"] if a["appId"] == creds["client_id"]]
    assert len(apps) == 1 and apps[0]["displayName"].startswith("vault-")

    # generate_credentials returns only data; read the lease through the raw API to revoke it.
    raw = bao.read("azure/creds/hvac-role")
    bao.sys.revoke_lease(lease_id=raw["lease_id"])
    apps = [a for a in admin_state(emulator)["applications"] if a["appId"] == raw["data"]["client_id"]]
    assert apps == []
    bao.sys.revoke_prefix("azure/creds/hvac-role")


def test_bad_input_is_a_clear_400(bao, emulator):
    configure(bao, emulator)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        bao.secrets.azure.create_or_update_role(
            name="bad",
            azure_roles=[{"role_name": "No Such Role", "scope": f"/subscriptions/{emulator['AZURE_SUBSCRIPTION_ID']}"}],
        )
    assert "No Such Role" in str(err.value)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        bao.adapter.post("/v1/azure/config", json={"root_password_ttl": "whenever"})
    assert "root_password_ttl" in str(err.value)


def test_delete_config(bao, emulator):
    configure(bao, emulator)
    bao.secrets.azure.delete_config()
    assert bao.secrets.azure.read_config()["tenant_id"] == ""
    configure(bao, emulator)


def create_app(emulator, name):
    """An application with a service principal, made as the root identity through Graph."""
    url = f"{emulator['AZURE_AUTHORITY_HOST']}{emulator['AZURE_TENANT_ID']}/oauth2/v2.0/token"
    token = requests.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": emulator["AZURE_CLIENT_ID"],
            "client_secret": emulator["AZURE_CLIENT_SECRET"],
            "scope": f"{emulator['AZURE_GRAPH_ENDPOINT']}/.default",
        },
        verify=emulator["SSL_CERT_FILE"],
        timeout=10,
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    graph = f"{emulator['AZURE_GRAPH_ENDPOINT']}/v1.0"
    app = requests.post(f"{graph}/applications", json={"displayName": name}, headers=headers,
                        verify=emulator["SSL_CERT_FILE"], timeout=10).json()
    requests.post(f"{graph}/servicePrincipals", json={"appId": app["appId"]}, headers=headers,
                  verify=emulator["SSL_CERT_FILE"], timeout=10).raise_for_status()
    return app["id"], app["appId"]


def test_static_roles_through_generic_calls(bao, emulator):
    """hvac has no static-role methods: its generic read/write/list/delete reach every path."""
    configure(bao, emulator)
    object_id, app_id = create_app(emulator, "hvac-static-app")
    bao.write("azure/static-roles/hvac-static", application_object_id=object_id,
              rotation_period="720h", metadata={"team": "eng"}, seamless_rotation=False)
    role = bao.read("azure/static-roles/hvac-static")["data"]
    assert role["application_object_id"] == object_id
    assert role["rotation_period"] == 720 * 3600
    assert role["metadata"] == {"team": "eng"}
    assert "client_secret" not in role
    assert "hvac-static" in bao.list("azure/static-roles")["data"]["keys"]

    creds = bao.read("azure/static-creds/hvac-static")
    assert creds["lease_id"] == ""
    first = creds["data"]
    assert first["client_id"] == app_id
    assert first["metadata"] == {"team": "eng"}
    assert token_status(emulator, app_id, first["client_secret"]) == 200

    token = bao.write("azure/static-creds/hvac-static/token",
                      scope=f"{emulator['AZURE_GRAPH_ENDPOINT']}/.default")["data"]
    assert token["token_type"] == "Bearer" and token["access_token"]

    bao.write("azure/rotate-role/hvac-static")
    second = bao.read("azure/static-creds/hvac-static")["data"]
    assert second["secret_id"] != first["secret_id"]
    assert token_status(emulator, app_id, first["client_secret"]) == 401
    assert token_status(emulator, app_id, second["client_secret"]) == 200

    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        bao.write("azure/static-roles/hvac-bad", application_object_id="00000000-0000-4000-8000-000000000000")
    assert "application_object_id" in str(err.value)

    bao.delete("azure/static-roles/hvac-static")
    apps = [a for a in admin_state(emulator)["applications"] if a["id"] == object_id]
    assert apps[0]["passwordCredentials"] == []
