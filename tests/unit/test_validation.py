"""Input validation of API.md §2.1: commands, images, allow-list, timeouts, job ids."""

from __future__ import annotations

import uuid

from twisted.trial import unittest

from jobsched.errors import InvalidArgument, PermissionDenied
from jobsched.jobs.validation import (
    image_allowed,
    is_valid_image_reference,
    parse_uuid,
    require_uuid,
    validate_command,
    validate_image,
    validate_timeout,
)
from tests.cases import add_cases

DIGEST = "sha256:" + "a" * 64

BLANK_COMMANDS = {"empty": "", "one_space": " ", "tabs_newlines_and_spaces": "\t\n  "}

VALID_IMAGE_REFERENCES = {
    "bare_name": "alpine",
    "name_and_tag": "alpine:3.19",
    "namespace_name_and_tag": "library/alpine:latest",
    "registry_with_port_and_path": "registry.example.com:5000/team/app:v1",
    "hyphenated_namespace": "jobsched-test/busybox:latest",
    "digest": f"alpine@{DIGEST}",
    "tag_and_digest": f"alpine:3.19@{DIGEST}",
    "separators_and_mixed_case_tag": "localhost:5000/a__b/c-d.e:Tag_1",
    "ipv6_registry": "[::1]:5000/app",
    "name_of_255_characters": "a" * 255,
}

INVALID_IMAGE_REFERENCES = {
    "leading_dash": "-rm",
    "option_lookalike": "--privileged",
    "upper_case_path": "UPPER/Case",
    "upper_case_name": "Alpine",
    "inner_space": "a b",
    "leading_space": " alpine",
    "name_of_256_characters": "a" * 256,
    "empty_tag": "alpine:",
    "tag_without_name": ":tag",
    "short_digest": "alpine@sha256:abc",
    "upper_case_digest": "alpine@sha256:" + "A" * 64,
    "tag_with_leading_dash": "alpine:-tag",
    "tag_of_129_characters": "alpine:" + "t" * 129,
    "empty_path_component": "a//b",
    "leading_slash": "/alpine",
    "trailing_slash": "alpine/",
    "trailing_dash": "alpine-",
    "trailing_newline": "alpine\n",
}

INVALID_UUIDS = {
    "empty": "",
    "words": "not-a-uuid",
    "four_digits": "1234",
    "non_hex_digits": "g" * 32,
    "unclosed_brace": "{" + "0" * 32,
    "leading_space": " " + "0" * 32,
    "trailing_newline": "0" * 32 + "\n",
    "31_hex_digits": "0" * 31,
    "33_hex_digits": "0" * 33,
    "misplaced_hyphens": "0000-00000000-0000-0000-000000000000",
    "uuid_prefix_without_urn": "uuid:" + "0" * 32,
    "urn_with_braces": "urn:uuid:{" + "0" * 32 + "}",
}


class CommandTests(unittest.TestCase):
    """validate_command: blank, too long, not UTF-8, NUL."""

    def test_command_is_returned_untrimmed(self):
        self.assertEqual(validate_command("  echo hi \n"), "  echo hi \n")

    def check_blank_command_is_refused(self, command):
        """A command of only whitespace is refused."""
        with self.assertRaises(InvalidArgument) as caught:
            validate_command(command)
        self.assertRegex(str(caught.exception), "^Command cannot be empty$")

    def test_command_length_is_counted_in_utf8_bytes(self):
        self.assertTrue(validate_command("x" * 1024))
        self.assertTrue(validate_command("é" * 512))  # 2 bytes each: exactly 1024
        for command in ("x" * 1025, "é" * 512 + "x", "€" * 342):  # 1025, 1025, 1026 bytes
            with self.assertRaises(InvalidArgument) as caught:
                validate_command(command)
            self.assertRegex(str(caught.exception), "^Command exceeds maximum allowed length$")

    def test_command_must_be_valid_utf8_without_nul(self):
        with self.assertRaises(InvalidArgument) as caught:
            validate_command("echo \udcff")
        self.assertRegex(str(caught.exception), "UTF-8")
        with self.assertRaises(InvalidArgument) as caught:
            validate_command("echo a\0b")
        self.assertRegex(str(caught.exception), "NUL")


add_cases(
    CommandTests,
    "test_blank_command_is_refused",
    BLANK_COMMANDS,
    CommandTests.check_blank_command_is_refused,
)


class ImageTests(unittest.TestCase):
    """Image references and the allow-list."""

    def check_valid_image_reference(self, reference):
        """A well-formed reference is accepted unchanged."""
        self.assertTrue(is_valid_image_reference(reference))
        self.assertEqual(validate_image(reference), reference)

    def check_invalid_image_reference(self, reference):
        """A malformed reference is refused."""
        self.assertFalse(is_valid_image_reference(reference))
        with self.assertRaises(InvalidArgument) as caught:
            validate_image(reference)
        self.assertRegex(str(caught.exception), "^Invalid image reference$")

    def test_empty_image_means_server_default(self):
        self.assertEqual(validate_image("", ["busybox:*"]), "")

    def test_allow_list(self):
        patterns = ["alpine:*", "registry.example.com/team/*"]
        self.assertTrue(image_allowed("anything:1", []))
        self.assertTrue(image_allowed("alpine:3.19", patterns))
        self.assertTrue(image_allowed("alpine", patterns))  # Docker runs alpine:latest
        self.assertTrue(image_allowed("registry.example.com/team/app:v1", patterns))
        self.assertFalse(image_allowed("busybox:latest", patterns))
        self.assertFalse(image_allowed("Alpine:3.19", patterns))  # case-sensitive
        self.assertFalse(image_allowed(f"alpine@{DIGEST}", ["alpine:*"]))
        self.assertEqual(validate_image("alpine:3.19", patterns), "alpine:3.19")
        with self.assertRaises(PermissionDenied) as caught:
            validate_image("busybox", patterns)
        self.assertRegex(str(caught.exception), "^Image not allowed$")


add_cases(
    ImageTests,
    "test_valid_image_reference",
    VALID_IMAGE_REFERENCES,
    ImageTests.check_valid_image_reference,
)
add_cases(
    ImageTests,
    "test_invalid_image_reference",
    INVALID_IMAGE_REFERENCES,
    ImageTests.check_invalid_image_reference,
)


class TimeoutTests(unittest.TestCase):
    """validate_timeout: from 0 up to the configured maximum."""

    def test_timeout(self):
        self.assertEqual(validate_timeout(0, 3600), 0)
        self.assertEqual(validate_timeout(3600, 3600), 3600)
        with self.assertRaises(InvalidArgument) as caught:
            validate_timeout(3601, 3600)
        self.assertRegex(str(caught.exception), "^timeout_seconds exceeds maximum of 3600$")
        with self.assertRaises(InvalidArgument) as caught:
            validate_timeout(-1, 3600)
        self.assertRegex(str(caught.exception), "negative")


class UuidTests(unittest.TestCase):
    """Job ids: canonical, hex, braced and URN forms, canonicalised; nothing else."""

    def test_uuid_forms(self):
        value = uuid.uuid4()
        canonical = str(value)
        for text in (
            canonical,
            canonical.upper(),
            value.hex,
            value.hex.upper(),
            "{" + canonical + "}",
            "{" + value.hex + "}",
            "urn:uuid:" + canonical,
            "URN:UUID:" + canonical.upper(),
        ):
            self.assertEqual(parse_uuid(text), canonical, text)

    def check_invalid_uuid(self, text):
        """Text that is no UUID parses to None."""
        self.assertIsNone(parse_uuid(text))

    def test_require_uuid_uses_the_endpoint_message(self):
        self.assertEqual(
            require_uuid("0" * 32, "Invalid job ID"), "00000000-0000-0000-0000-000000000000"
        )
        with self.assertRaises(InvalidArgument) as caught:
            require_uuid("nope", "invalid job_id")
        self.assertRegex(str(caught.exception), "^invalid job_id$")


add_cases(UuidTests, "test_invalid_uuid", INVALID_UUIDS, UuidTests.check_invalid_uuid)
