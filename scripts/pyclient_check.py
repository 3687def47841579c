#!/usr/bin/env python3
"""Check the PyPI package `docker-registry-client` (api_version=1) against a running regfs.

Usage: pyclient_check.py URL EXPECT_JSON [COUNTS_FILE]

EXPECT_JSON describes what was pushed (written by scripts/pyclient-check.sh):
  {"user": "...", "password": "...",
   "repos":  {"ns/repo": {"tags": {"tag": "id", ...}, "images": ["id", ...]}, ...},
   "images": {"id": {"json": "<file with the exact json bytes pushed>",
                     "ancestry": ["id", "parent", ...]}, ...}}

Every check uses the client exactly as published; the only thing the client has no public
method for is the repository image list (GET /v1/repositories/<ns>/<repo>/images), which is
fetched through the client's own HTTP helper.

Prints one line per check. If COUNTS_FILE is given, writes "PASSED FAILED" into it;
otherwise prints "N passed, N failed" as its last line. Exits 1 if any check failed.
"""

import json
import sys
import time
import traceback

from requests import get
from requests.exceptions import HTTPError

from docker_registry_client import DockerRegistryClient
from docker_registry_client._BaseClient import BaseClientV1
from docker_registry_client.Image import Image

SEARCH_WAIT_SECONDS = 15


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            fn()
        except AssertionError as e:
            self.failed += 1
            print(f"FAIL {name}: {e}")
        except HTTPError as e:
            self.failed += 1
            r = e.response
            req = r.request
            print(f"FAIL {name}: {req.method} {req.url} -> {r.status_code} {r.text[:500]!r}")
        except Exception as e:  # a crash inside the client counts as a failure too
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=4, file=sys.stdout)
        else:
            self.passed += 1
            print(f"ok   {name}")


def expect_equal(what, got, want):
    assert got == want, f"{what}: got {got!r}, want {want!r}"


def split_name(name):
    ns, repo = name.split("/", 1)
    return ns, repo


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    url = argv[1].rstrip("/")
    with open(argv[2]) as f:
        expect = json.load(f)
    counts_file = argv[3] if len(argv) == 4 else None

    repos = expect["repos"]
    images = {}
    for image_id, info in expect["images"].items():
        with open(info["json"], "rb") as f:
            images[image_id] = {"json": json.loads(f.read()), "ancestry": info["ancestry"]}

    c = Checks()
    anon = DockerRegistryClient(url, api_version=1)
    authed = DockerRegistryClient(url, api_version=1, username=expect["user"],
                                  password=expect["password"])

    # --- status -----------------------------------------------------------------------------
    def ping():
        got = anon._base_client.check_status()
        assert isinstance(got, dict), f"GET /v1/_ping body: got {got!r}, want a JSON object"
    c.run("client.check_status() (GET /v1/_ping)", ping)

    # --- repositories (GET /v1/search, no q) --------------------------------------------------
    listed = {}

    def list_repositories():
        # The search listing may lag a few seconds behind writes; give it a bounded wait,
        # with a fresh client each time (the client caches its first listing).
        deadline = time.monotonic() + SEARCH_WAIT_SECONDS
        while True:
            client = DockerRegistryClient(url, api_version=1)
            try:
                got = client.repositories()
            except ValueError as e:  # the client splits every search name on "/"
                raw = client._base_client.search()
                raise AssertionError(f"client crashed on the GET /v1/search listing ({e}); "
                                     f"names must be 'namespace/repo': {raw!r}") from None
            missing = sorted(set(repos) - set(got))
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        listed.update(got)
        assert not missing, (f"repositories(): {sorted(got)} lacks {missing} "
                             f"(waited {SEARCH_WAIT_SECONDS}s)")
    c.run("client.repositories() lists " + ", ".join(sorted(repos)), list_repositories)

    def list_namespaces():
        want = sorted({split_name(n)[0] for n in repos})
        got = anon.namespaces()
        missing = sorted(set(want) - set(got))
        assert not missing, f"namespaces(): {sorted(got)} lacks {missing}"
        for ns in want:
            in_ns = anon.repositories(namespace=ns)
            for name in repos:
                if split_name(name)[0] == ns:
                    assert name in in_ns, f"repositories(namespace={ns!r}): {sorted(in_ns)} lacks {name}"
    c.run("client.namespaces() and repositories(namespace=...)", list_namespaces)

    # --- per repository ---------------------------------------------------------------------
    for name, want in sorted(repos.items()):
        ns, repo_name = split_name(name)

        def tags(name=name, want=want):
            repo = listed.get(name) or anon.repository(name)
            expect_equal(f"{name} tags()", sorted(repo.tags()), sorted(want["tags"]))
        c.run(f"{name}: Repository.tags()", tags)

        def image_per_tag(name=name, want=want):
            repo = anon.repository(name)
            for tag, image_id in sorted(want["tags"].items()):
                expect_equal(f"{name} image({tag!r}).image_id", repo.image(tag).image_id, image_id)
        c.run(f"{name}: Repository.image(tag) ids", image_per_tag)

        def image_id_per_tag(ns=ns, repo_name=repo_name, want=want):
            for tag, image_id in sorted(want["tags"].items()):
                got = anon._base_client.get_image_id(ns, repo_name, tag)
                expect_equal(f"get_image_id({ns!r}, {repo_name!r}, {tag!r})", got, image_id)
        c.run(f"{name}: get_image_id(ns, repo, tag) (GET .../tags/<tag>)", image_id_per_tag)

        def tag_data(name=name, want=want):
            repo = anon.repository(name)
            for tag in sorted(want["tags"]):
                got = repo.data(tag)
                assert isinstance(got, dict), f"{name} data({tag!r}): got {got!r}, want an object"
        c.run(f"{name}: Repository.data(tag) (GET .../tags/<tag>/json)", tag_data)

        def image_list(ns=ns, repo_name=repo_name, want=want):
            # No public method for this in the client; use its own HTTP helper.
            got = anon._base_client._http_call(BaseClientV1.REPO + "/images", get,
                                               namespace=ns, repository=repo_name)
            assert isinstance(got, list), f"images list: got {got!r}, want a list"
            ids = sorted(entry.get("id") for entry in got)
            expect_equal(f"{ns}/{repo_name} image ids", ids, sorted(want["images"]))
        c.run(f"{name}: image list (GET .../images)", image_list)

    # --- library repository by bare name ------------------------------------------------------
    for name, want in sorted(repos.items()):
        ns, repo_name = split_name(name)
        if ns != "library":
            continue

        def bare(name=name, repo_name=repo_name, want=want):
            repo = anon.repository(repo_name)  # no namespace: the client fills in "library"
            expect_equal(f"repository({repo_name!r}).name", repo.name, name)
            expect_equal(f"repository({repo_name!r}).tags()", sorted(repo.tags()),
                         sorted(want["tags"]))
        c.run(f"{name}: repository({repo_name!r}) without namespace", bare)

    # --- images -------------------------------------------------------------------------------
    for image_id, want in sorted(images.items(), key=lambda kv: len(kv[1]["ancestry"])):
        short = image_id[:12]

        def image_json(image_id=image_id, want=want):
            img = Image(image_id, anon._base_client)
            expect_equal(f"{image_id[:12]} get_json()", img.get_json(), want["json"])
            expect_equal(f"{image_id[:12]} get_data('id')", img.get_data("id"), image_id)
            if "parent" in want["json"]:
                expect_equal(f"{image_id[:12]} get_data('parent')", img.get_data("parent"),
                             want["json"]["parent"])
        c.run(f"image {short}: get_json() equals the pushed json", image_json)

        def ancestry(image_id=image_id, want=want):
            img = Image(image_id, anon._base_client)
            expect_equal(f"{image_id[:12]} ancestry()", img.ancestry(), want["ancestry"])
        c.run(f"image {short}: ancestry() = {[a[:12] for a in want['ancestry']]}", ancestry)

    # --- the same reads with Basic credentials ------------------------------------------------
    def authed_reads():
        got = authed.repositories()
        missing = sorted(set(repos) - set(got))
        assert not missing, f"repositories() with Basic auth: {sorted(got)} lacks {missing}"
        for name, want in sorted(repos.items()):
            repo = authed.repository(name)
            expect_equal(f"{name} tags() with Basic auth", sorted(repo.tags()), sorted(want["tags"]))
            for tag, image_id in sorted(want["tags"].items()):
                img = repo.image(tag)
                expect_equal(f"{name}:{tag} ancestry() with Basic auth", img.ancestry(),
                             images[image_id]["ancestry"])
                expect_equal(f"{name}:{tag} get_json() with Basic auth", img.get_json(),
                             images[image_id]["json"])
    c.run(f"reads as {expect['user']} (Basic auth)", authed_reads)

    # --- tag and untag through the client (the client's only v1 writes that work) ------------
    own = sorted(n for n in repos if split_name(n)[0] == expect["user"])
    if own:
        name = own[0]
        some_id = sorted(repos[name]["tags"].items())[0][1]
        extra = "pyclient"

        def tag_untag():
            repo = authed.repository(name)
            got = repo.tag(extra, some_id)
            fresh = authed.repository(name)
            tags = fresh.tags()
            assert extra in tags, f"after tag({extra!r}) (answer {got!r}): tags() = {sorted(tags)}"
            expect_equal(f"{name} image({extra!r}).image_id", fresh.image(extra).image_id, some_id)
            repo.untag(extra)
            expect_equal(f"{name} tags() after untag({extra!r})",
                         sorted(authed.repository(name).tags()), sorted(repos[name]["tags"]))
        c.run(f"{name}: Repository.tag() then untag() as {expect['user']}", tag_untag)

    if counts_file:
        with open(counts_file, "w") as f:
            f.write(f"{c.passed} {c.failed}\n")
    else:
        print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
