"""The `lisa` verb table."""

from lisa.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in COMMANDS:
        assert verb in out


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_launcher_local_rank_is_moved_after_the_verb(monkeypatch):
    seen = {}
    import lisa.chat.cli as chat

    monkeypatch.setattr(chat, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    main(["--local_rank=3", "chat", "--version", "x"])
    assert seen["argv"] == ["--local_rank=3", "--version", "x"]
