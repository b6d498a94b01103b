"""The readers of ``KVRAFT_*`` for the commands other than ``serve`` (kvraft/config.py): the
same variable names and defaults the commands had when each read the environment itself."""

from __future__ import annotations

import pytest

from kvraft.config import ClientSettings, ConfigError, FtpSettings, UpDefaults


def test_ftp_settings_defaults_and_names():
    assert FtpSettings.from_env({}) == FtpSettings(
        listen="0.0.0.0:2121",
        user="kvraft",
        password="",
        root="data/ftp",
        tls_cert=None,
        tls_key=None,
        passive_ports="",
    )
    env = {
        "KVRAFT_FTP_LISTEN": "127.0.0.1:2200",
        "KVRAFT_FTP_USER": "u",
        "KVRAFT_FTP_PASSWORD": "secret-pw",
        "KVRAFT_FTP_ROOT": "/srv/ftp",
        "KVRAFT_FTP_TLS_CERT": "c.pem",
        "KVRAFT_FTP_TLS_KEY": "k.pem",
        "KVRAFT_FTP_PASSIVE_PORTS": "30000-30009",
    }
    s = FtpSettings.from_env(env)
    assert (s.listen, s.user, s.root) == ("127.0.0.1:2200", "u", "/srv/ftp")
    assert s.password == "secret-pw"
    assert (s.tls_cert, s.tls_key, s.passive_ports) == ("c.pem", "k.pem", "30000-30009")
    assert "secret-pw" not in repr(s)


def test_up_defaults_and_names():
    d = UpDefaults.from_env({})
    assert (d.host, d.http_base, d.raft_base, d.ftp_port) == ("127.0.0.1", 8001, 9001, 2121)
    assert (d.data_dir, d.replication_factor) == ("data", 2)
    assert (d.secret, d.admin_token, d.ftp_password) == ("", "", "")
    env = {
        "KVRAFT_HOST": "127.0.0.2",
        "KVRAFT_HTTP_BASE": "8101",
        "KVRAFT_RAFT_BASE": "9101",
        "KVRAFT_FTP_PORT": "2221",
        "KVRAFT_DATA_DIR": "d",
        "KVRAFT_REPLICATION_FACTOR": "3",
        "KVRAFT_SECRET": "s3cret-s3cret",
        "KVRAFT_ADMIN_TOKEN": "adm",
        "KVRAFT_FTP_PASSWORD": "ftp-pw",
    }
    d = UpDefaults.from_env(env)
    assert (d.host, d.http_base, d.raft_base, d.ftp_port) == ("127.0.0.2", 8101, 9101, 2221)
    assert (d.data_dir, d.replication_factor) == ("d", 3)
    assert (d.secret, d.admin_token, d.ftp_password) == ("s3cret-s3cret", "adm", "ftp-pw")
    assert "s3cret" not in repr(d)
    with pytest.raises(ConfigError, match="KVRAFT_HTTP_BASE"):
        UpDefaults.from_env({"KVRAFT_HTTP_BASE": "eighty"})


def test_client_settings_treat_empty_tokens_as_unset():
    assert ClientSettings.from_env({}) == ClientSettings(nodes="", token=None, admin_token=None)
    assert ClientSettings.from_env({"KVRAFT_TOKEN": "", "KVRAFT_ADMIN_TOKEN": ""}).token is None
    s = ClientSettings.from_env(
        {"KVRAFT_NODES": "a:1,b:2", "KVRAFT_TOKEN": "t", "KVRAFT_ADMIN_TOKEN": "a"}
    )
    assert (s.nodes, s.token, s.admin_token) == ("a:1,b:2", "t", "a")
