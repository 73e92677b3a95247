"""Create a partner and its first API key; the key is printed once, alone on the last line."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import DataError, IntegrityError

from accounts.models import Partner, Program
from accounts.services import partner_create


class Command(BaseCommand):
    help = (
        "Create a partner in a program and print its new API key alone on the last line of "
        "standard output. The key is stored hashed: it cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--program", required=True, help="Slug of the program the partner belongs to.")
        parser.add_argument("--name", required=True, help="Partner name, unique within the program.")

    def handle(self, *args, program: str, name: str, **options):
        name = name.strip()
        max_length = Partner._meta.get_field("name").max_length
        if not name or len(name) > max_length:
            raise CommandError(f"--name must be 1 to {max_length} characters.")
        found = Program.objects.filter(slug=program).first()
        if found is None:
            known = ", ".join(Program.objects.values_list("slug", flat=True)[:20]) or "none yet"
            raise CommandError(f"No program with slug {program!r} (programs: {known}).")
        try:
            partner, key = partner_create(program=found, name=name)
        except IntegrityError as exc:
            if Partner.objects.filter(program=found, name=name).exists():
                raise CommandError(f"Program {found.slug!r} already has a partner named {name!r}.") from exc
            raise
        except DataError as exc:
            raise CommandError(
                f"The partner could not be created: {str(exc).strip()}. (Its first API key is named after it, "
                "and key names are limited to 50 characters.)"
            ) from exc
        self.stdout.write(f"Partner {partner.name!r} (id {partner.pk}) created in program {found.slug!r}.")
        self.stdout.write("Its API key follows. It is shown only this once: store it now.")
        self.stdout.write(key)
