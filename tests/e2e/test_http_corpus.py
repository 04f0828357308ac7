"""Runs the malformed-HTTP corpus of tests/http/ (see its README): each
case gets its documented answer, and the server keeps serving."""
import codecs
import glob
import os
import re
import socket
import unittest

from serve_harness import Server

CORPUS = os.path.join(os.path.dirname(__file__), "..", "http")


def load(path):
    head, raw = open(path).read().split("---\n", 1)
    expect = re.search(r"^expect: (\S+)( close)?$", head, re.M)
    data = codecs.decode(raw.rstrip("\n").replace("\n", ""), "unicode_escape").encode("latin-1")
    if expect.group(1) == "none":  # no answer, and the connection stays open
        return data, [], None
    return data, expect.group(1).split(","), bool(expect.group(2))


def answers_in(got):
    return [s.decode() for s in re.findall(rb"HTTP/1\.[01] (\d{3})", got)]


def exchange(server, data, expected, close):
    """Sends data and reads until the server closes, or for a connection
    that stays open, until its expected answers came and then 0.3 s more
    (an extra answer would come with them), or 3 s."""
    c = socket.create_connection((server.host, server.port), timeout=3)
    got, closed = b"", False
    try:
        c.sendall(data)
        while True:
            if not close and len(answers_in(got)) >= len(expected) > 0:
                c.settimeout(0.3)
            chunk = c.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    finally:
        c.close()
    return answers_in(got), closed


class HttpCorpus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-body", "1024", "--max-header", "4096")
        cls.server.deploy("echo", "echo", "/echo")
        cls.server.cli("create-backend", "p", "echo")
        cls.server.cli("create-endpoint", "post", "--backend", "p", "--route", "/post",
                       "--methods", "POST")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_corpus(self):
        files = sorted(glob.glob(os.path.join(CORPUS, "[0-9]*.txt")))
        self.assertGreaterEqual(len(files), 60)
        for path in files:
            with self.subTest(case=os.path.basename(path)):
                data, statuses, close = load(path)
                got, closed = exchange(self.server, data, statuses, close)
                self.assertEqual(got, statuses)
                if close:
                    self.assertTrue(closed, "the connection stayed open")
                elif close is None:
                    self.assertFalse(closed, "the connection was closed")
                self.assertEqual(self.server.post("/echo", b"alive").body, b"alive")
        self.assertTrue(self.server.alive())


if __name__ == "__main__":
    unittest.main()
