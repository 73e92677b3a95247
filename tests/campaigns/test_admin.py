import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns import services
from campaigns.models import Redemption, Reward, VoucherCode
from ledger.audit import run_audit
from ledger.models import Balance, Entry, Hold, Operation
from ledger.services import points_earn
from loyalty.errors import DomainError

pytestmark = pytest.mark.django_db


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def reward(program, code="gift-card", **fields) -> Reward:
    fields.setdefault("name", code.replace("-", " ").capitalize())
    fields.setdefault("cost", 100)
    return Reward.objects.create(program=program, code=code, **fields)


def upload_url(r: Reward) -> str:
    return reverse("admin:campaigns_reward_upload_codes", args=[r.pk])


def free_codes(r: Reward) -> list[str]:
    return sorted(VoucherCode.objects.filter(reward=r, redemption__isnull=True).values_list("code", flat=True))


@pytest.fixture
def funded(member):
    points_earn(member=member, points=10_000, key="seed")
    return member


@pytest.fixture
def pool(program):
    return reward(program, "gift-card", vouchers=Reward.Vouchers.POOL)


def act(admin_client, action: str, *redemptions: Redemption):
    return admin_client.post(reverse("admin:campaigns_redemption_changelist"), {
        "action": action, "_selected_action": [r.pk for r in redemptions],
    })


def status_of(redemption: Redemption) -> str:
    return Redemption.objects.get(pk=redemption.pk).status


def ledger_state(member) -> tuple:
    balance = Balance.objects.get(member=member)
    return (balance.available, balance.held, Entry.objects.filter(member=member).count(),
            Operation.objects.filter(member=member).count())


# --- pages load ------------------------------------------------------------------------------


def test_changelists_and_change_pages_load(admin_client, program, funded, pool):
    generated = reward(program, "tote-bag", vouchers=Reward.Vouchers.GENERATED, stock=5)
    plain = reward(program, "coffee", active_from="2026-01-01T00:00Z", per_member_limit=2)
    services.voucher_codes_upload(reward=pool, codes=["P-1", "P-2"])
    services.redemption_create(member=funded, reward=pool, key="r-pool")
    services.redemption_create(member=funded, reward=generated, key="r-gen")
    services.redemption_create(member=funded, reward=plain, key="r-plain", capture=False)
    services.redemption_create(member=funded, points=10, key="r-points")

    for name in ("reward", "vouchercode", "redemption"):
        assert admin_client.get(reverse(f"admin:campaigns_{name}_changelist")).status_code == 200, name
    for obj in (*Reward.objects.all(), *VoucherCode.objects.all(), *Redemption.objects.all()):
        url = reverse(f"admin:campaigns_{obj._meta.model_name}_change", args=[obj.pk])
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.get(reverse("admin:campaigns_reward_add")).status_code == 200
    assert admin_client.get(upload_url(pool)).status_code == 200


def test_reward_list_shows_codes_left_without_a_query_per_reward(admin_client, program):
    url = reverse("admin:campaigns_reward_changelist")
    first = reward(program, "pool-0", vouchers=Reward.Vouchers.POOL)
    services.voucher_codes_upload(reward=first, codes=["A", "B", "C"])
    admin_client.get(url)  # warm the caches (content types, session)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    for n in range(1, 6):
        more = reward(program, f"pool-{n}", vouchers=Reward.Vouchers.POOL)
        services.voucher_codes_upload(reward=more, codes=[f"X{n}-{i}" for i in range(n)])
        reward(program, f"gen-{n}", vouchers=Reward.Vouchers.GENERATED)
    with CaptureQueriesContext(connection) as eleven:
        response = admin_client.get(url)
    assert len(eleven) == len(one)
    rows = {r.code: r.free_codes for r in response.context["cl"].result_list}
    assert rows["pool-0"] == 3 and rows["pool-4"] == 4 and rows["gen-1"] == 0
    assert response.context["cl"].result_count == 11


def test_reward_filters_and_search(admin_client, program, make_program, pool):
    reward(program, "coffee", is_active=False)
    reward(make_program(), "coffee")
    url = reverse("admin:campaigns_reward_changelist")
    assert admin_client.get(url, {"vouchers__exact": "pool"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"is_active__exact": "0"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"program__id__exact": program.pk}).context["cl"].result_count == 2
    assert admin_client.get(url, {"q": "coffee"}).context["cl"].result_count == 2


def test_reward_change_page_links_to_the_upload_only_for_a_pool(admin_client, program, pool):
    page = admin_client.get(reverse("admin:campaigns_reward_change", args=[pool.pk])).content.decode()
    assert upload_url(pool) in page
    plain = reward(program, "coffee")
    page = admin_client.get(reverse("admin:campaigns_reward_change", args=[plain.pk])).content.decode()
    assert "upload-codes" not in page


# --- the reward form -------------------------------------------------------------------------


REWARD_FORM = {"code": "coffee", "name": "Coffee", "description": "", "is_active": "on", "cost": "150",
               "stock": "", "per_member_limit": "", "active_from_0": "", "active_from_1": "",
               "active_until_0": "", "active_until_1": "", "vouchers": "none"}


def test_reward_is_added_in_the_admin(admin_client, program):
    response = admin_client.post(reverse("admin:campaigns_reward_add"), {**REWARD_FORM, "program": program.pk,
                                                                          "stock": "10", "vouchers": "generated"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    created = Reward.objects.get(program=program, code="coffee")
    assert (created.cost, created.stock, created.vouchers) == (150, 10, "generated")


@pytest.mark.parametrize(("fields", "field"), [
    ({"vouchers": "pool", "stock": "10"}, "stock"),
    ({"active_from_0": "2026-02-01", "active_from_1": "00:00", "active_until_0": "2026-01-01",
      "active_until_1": "00:00"}, "active_until"),
])
def test_reward_form_refuses_inconsistent_settings(admin_client, program, fields, field):
    response = admin_client.post(reverse("admin:campaigns_reward_add"), {**REWARD_FORM, "program": program.pk,
                                                                          **fields})
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert not Reward.objects.exists()


@pytest.mark.parametrize(("typed", "expected"), [("10", 7), ("15", 12), ("", None)])
def test_saving_the_reward_page_keeps_the_units_redeemed_while_it_was_open(admin_client, program, funded, typed,
                                                                            expected):
    """Loaded with 10 left; 3 redeemed meanwhile; saved with the stock as loaded (only the name
    changed), raised to 15, or made unlimited."""
    reward = Reward.objects.create(program=program, code="coffee", name="Coffee", cost=10, stock=10)
    url = reverse("admin:campaigns_reward_change", args=[reward.pk])
    page = admin_client.get(url)
    assert 'name="initial-stock" value="10"' in page.content.decode()  # the page says what it showed
    services.redemption_create(member=funded, reward=reward, quantity=3, key="meanwhile")
    response = admin_client.post(url, {**REWARD_FORM, "name": "Coffee (large)", "stock": typed,
                                       "initial-stock": "10"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    reward.refresh_from_db()
    assert (reward.name, reward.stock) == ("Coffee (large)", expected)


def test_pool_with_free_codes_keeps_its_mode_and_the_page_saves_with_its_inline(admin_client, pool):
    services.voucher_codes_upload(reward=pool, codes=["A", "B"])
    url = reverse("admin:campaigns_reward_change", args=[pool.pk])
    page = admin_client.get(url)
    [inline] = page.context["inline_admin_formsets"]
    formset = inline.formset
    data = {**REWARD_FORM, "code": pool.code, "name": "Gift card (new)", "vouchers": "pool",
            **{f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()}}
    for form in formset.forms:
        data[f"{form.prefix}-id"] = form.instance.pk

    refused = admin_client.post(url, {**data, "vouchers": "generated"})
    assert list(refused.context["adminform"].form.errors) == ["vouchers"]

    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    pool.refresh_from_db()
    assert (pool.name, pool.vouchers, free_codes(pool)) == ("Gift card (new)", "pool", ["A", "B"])


# --- uploading codes -------------------------------------------------------------------------


def test_upload_adds_codes_and_reports_what_it_skipped(admin_client, pool):
    services.voucher_codes_upload(reward=pool, codes=["OLD-1"])
    response = admin_client.post(upload_url(pool), {"codes": " NEW-1 \n\nNEW-2\nOLD-1\nNEW-1\r\nNEW-3\nOLD-1\n"})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:campaigns_reward_change", args=[pool.pk])
    assert free_codes(pool) == ["NEW-1", "NEW-2", "NEW-3", "OLD-1"]
    said = messages_of(response)
    assert any("Added 3 code(s)" in m and "4 free" in m for m in said), said
    assert any("1 code(s) repeated in the upload" in m and "NEW-1" in m and "OLD-1" not in m for m in said), said
    assert any("1 code(s) already in the pool: OLD-1" in m for m in said), said
    pool.refresh_from_db()
    assert pool.stock is None  # a pool's availability is its free codes
    assert LogEntry.objects.filter(object_id=str(pool.pk), change_message__contains="Uploaded 3").exists()


@pytest.mark.parametrize(("name", "content"), [
    ("codes.txt", b"F-1\nF-2\n\nF-2\n"),
    ("codes.csv", b"\xef\xbb\xbfF-1,first batch\r\nF-2,\r\n\r\n"),
])
def test_upload_from_a_file(admin_client, pool, name, content):
    response = admin_client.post(upload_url(pool), {"codes": "", "file": SimpleUploadedFile(name, content)})
    assert response.status_code == 302
    assert free_codes(pool) == ["F-1", "F-2"]


@pytest.mark.parametrize(("data", "error"), [
    ({"codes": "\n  \n"}, "Paste some codes"),
    ({"codes": "A,B\nC"}, "without commas"),
    ({"codes": "X" * 65}, "at most 64"),
    ({"codes": "", "file": SimpleUploadedFile("codes.xlsx", b"A\n")}, "Upload a .txt or .csv"),
    ({"codes": "", "file": SimpleUploadedFile("codes.txt", b"\xff\xfeA")}, "not UTF-8"),
    ({"codes": "", "file": SimpleUploadedFile("codes.txt", b"A\x00B\n")}, "NUL character"),
    ({"codes": "", "file": SimpleUploadedFile("codes.csv", b"A\n" + b"x" * 140_000 + b"\n")}, "cannot be read"),
])
def test_upload_refuses_bad_input_and_adds_nothing(admin_client, pool, data, error):
    response = admin_client.post(upload_url(pool), data)
    assert response.status_code == 200
    form = response.context["form"]
    assert any(error in message for messages in form.errors.values() for message in messages), form.errors
    assert not VoucherCode.objects.exists()


def test_upload_is_only_for_pool_rewards(admin_client, program):
    generated = reward(program, "tote-bag", vouchers=Reward.Vouchers.GENERATED)
    response = admin_client.post(upload_url(generated), {"codes": "A"})
    assert response.status_code == 302
    assert any("does not give codes from an uploaded pool" in m for m in messages_of(response))
    assert not VoucherCode.objects.exists()
    with pytest.raises(DomainError):
        services.voucher_codes_upload(reward=generated, codes=["A"])


def test_uploaded_pool_gives_each_code_exactly_once(admin_client, program, make_member, pool):
    admin_client.post(upload_url(pool), {"codes": "C-1\nC-2\nC-3"})
    admin_client.post(upload_url(pool), {"codes": "C-3\nC-4"})  # C-3 again: skipped
    members = [make_member(program) for _ in range(5)]
    for n, m in enumerate(members):
        points_earn(member=m, points=500, key=f"seed-{n}")

    given = [services.redemption_create(member=m, reward=pool, key=f"r-{n}").voucher_code
             for n, m in enumerate(members[:3])]
    held = services.redemption_create(member=members[3], reward=pool, key="r-held", capture=False)
    given.append(services.redemption_capture(redemption=held).voucher_code)

    assert sorted(given) == ["C-1", "C-2", "C-3", "C-4"]
    assert free_codes(pool) == []
    for redemption in Redemption.objects.filter(reward=pool):
        assert list(redemption.voucher_codes.values_list("code", flat=True)) == [redemption.voucher_code]
    with pytest.raises(services.OutOfStock):
        services.redemption_create(member=members[4], reward=pool, key="r-none-left")
    assert Balance.objects.get(member=members[4]).available == 500
    assert run_audit() == []

    # More codes, and the reward is available again.
    admin_client.post(upload_url(pool), {"codes": "C-1\nC-5"})
    assert services.redemption_create(member=members[4], reward=pool, key="r-late").voucher_code == "C-5"


# --- voucher codes ---------------------------------------------------------------------------


def test_given_codes_cannot_be_deleted_free_ones_can(admin_client, funded, pool):
    services.voucher_codes_upload(reward=pool, codes=["G-1", "F-1", "F-2", "F-3"])
    services.redemption_create(member=funded, reward=pool, key="r-1")
    given = VoucherCode.objects.get(code="G-1")
    f1, f2, f3 = (VoucherCode.objects.get(code=c) for c in ("F-1", "F-2", "F-3"))

    assert admin_client.post(reverse("admin:campaigns_vouchercode_delete", args=[given.pk]),
                             {"post": "yes"}).status_code == 403
    assert admin_client.post(reverse("admin:campaigns_vouchercode_change", args=[f1.pk]),
                             {"code": "EDITED"}).status_code == 403
    assert admin_client.get(reverse("admin:campaigns_vouchercode_add")).status_code == 403
    assert admin_client.post(reverse("admin:campaigns_vouchercode_delete", args=[f1.pk]),
                             {"post": "yes"}).status_code == 302

    changelist = reverse("admin:campaigns_vouchercode_changelist")
    page = admin_client.get(changelist)
    assert [name for name, _label in page.context["action_form"].fields["action"].choices if name] == [
        "delete_free"]
    response = admin_client.post(changelist, {"action": "delete_free",
                                              "_selected_action": [given.pk, f2.pk]})
    said = messages_of(response)
    assert "1 free code(s) deleted." in said and "1 code(s) kept: they were given out." in said
    assert list(VoucherCode.objects.order_by("code").values_list("code", flat=True)) == ["F-3", "G-1"]
    assert VoucherCode.objects.get(pk=given.pk).redemption_id is not None
    assert f3.code in admin_client.get(changelist, {"state": "free"}).content.decode()
    assert admin_client.get(changelist, {"state": "given"}).context["cl"].result_count == 1


# --- redemptions -----------------------------------------------------------------------------


def test_redemption_admin_is_read_only(admin_client, funded):
    redemption = services.redemption_create(member=funded, points=10, key="r-1")
    assert admin_client.get(reverse("admin:campaigns_redemption_add")).status_code == 403
    assert admin_client.post(reverse("admin:campaigns_redemption_delete", args=[redemption.pk]),
                             {"post": "yes"}).status_code == 403
    url = reverse("admin:campaigns_redemption_change", args=[redemption.pk])
    assert admin_client.post(url, {"points": "1", "status": "voided"}).status_code == 403
    page = admin_client.get(url)
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    actions = admin_client.get(reverse("admin:campaigns_redemption_changelist")).context["action_form"]
    assert [name for name, _label in actions.fields["action"].choices if name] == ["capture", "void", "cancel"]
    redemption.refresh_from_db()
    assert (redemption.points, redemption.status) == (10, "captured")


def test_redemption_list_search_and_filters(admin_client, program, funded, make_member, pool):
    services.voucher_codes_upload(reward=pool, codes=["FIND-ME", "OTHER"])
    by_code = services.redemption_create(member=funded, reward=pool, key="r-1")
    other = make_member(program, external_id="someone-else")
    points_earn(member=other, points=500, key="seed-other")
    held = services.redemption_create(member=other, points=50, key="r-2", capture=False)
    url = reverse("admin:campaigns_redemption_changelist")

    def found(**params):
        return [r.public_id for r in admin_client.get(url, params).context["cl"].result_list]

    assert found(q="FIND-ME") == [by_code.public_id]
    assert found(q=held.public_id) == [held.public_id]
    assert found(q="someone-else") == [held.public_id]
    assert found(status__exact="held") == [held.public_id]
    assert found(reward__id__exact=pool.pk) == [by_code.public_id]
    assert found(program__id__exact=program.pk) == [held.public_id, by_code.public_id]
    page = admin_client.get(url).content.decode()
    assert "FIND-ME" in page and funded.external_id in page


def test_redemption_list_does_not_query_per_row(admin_client, funded, pool):
    url = reverse("admin:campaigns_redemption_changelist")
    services.voucher_codes_upload(reward=pool, codes=[f"Q-{n}" for n in range(6)])
    services.redemption_create(member=funded, reward=pool, key="r-0")
    admin_client.get(url)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    for n in range(1, 6):
        services.redemption_create(member=funded, reward=pool, key=f"r-{n}")
    with CaptureQueriesContext(connection) as six:
        admin_client.get(url)
    assert len(six) == len(one)


def test_actions_capture_void_and_cancel_through_the_services(admin_client, funded, pool):
    services.voucher_codes_upload(reward=pool, codes=["V-1", "V-2"])
    to_capture = services.redemption_create(member=funded, reward=pool, key="h-1", capture=False)
    to_void = services.redemption_create(member=funded, points=300, key="h-2", capture=False)
    to_cancel = services.redemption_create(member=funded, points=400, key="c-1")
    assert Balance.objects.get(member=funded).available == 10_000 - 100 - 300 - 400

    response = act(admin_client, "capture", to_capture)
    assert response.status_code == 302
    assert "1 redemption(s) captured." in messages_of(response)
    assert status_of(to_capture) == "captured"
    assert Redemption.objects.get(pk=to_capture.pk).voucher_code == "V-1"  # given at capture
    assert Hold.objects.get(pk=to_capture.hold_id).status == "captured"

    assert "1 redemption(s) voided." in messages_of(act(admin_client, "void", to_void))
    assert status_of(to_void) == "voided"

    assert "1 redemption(s) cancelled." in messages_of(act(admin_client, "cancel", to_cancel))
    assert status_of(to_cancel) == "cancelled"

    balance = Balance.objects.get(member=funded)
    assert (balance.available, balance.held) == (10_000 - 100, 0)
    assert LogEntry.objects.filter(object_id=str(to_void.pk), change_message="Voided").exists()
    assert run_audit() == []

    # Again: nothing changes, and the admin says so.
    assert "1 redemption(s) were already cancelled; nothing changed." in messages_of(
        act(admin_client, "cancel", to_cancel))
    assert Balance.objects.get(member=funded).available == 10_000 - 100


def test_an_invalid_action_shows_the_error_and_changes_nothing(admin_client, funded):
    captured = services.redemption_create(member=funded, points=200, key="c-1")
    held = services.redemption_create(member=funded, points=300, key="h-1", capture=False)
    before = ledger_state(funded)

    response = act(admin_client, "void", captured)

    assert response.status_code == 302
    said = messages_of(response)
    assert said == [f"1 redemption(s) not voided: The redemption is captured; only a held one can be voided. "
                    f"({captured.public_id})"]
    assert status_of(captured) == "captured"
    assert ledger_state(funded) == before

    # A mixed selection: the held one is voided, the captured one reported.
    said = messages_of(act(admin_client, "void", captured, held))
    assert "1 redemption(s) voided." in said
    assert any(captured.public_id in m and "only a held one" in m for m in said), said
    assert (status_of(captured), status_of(held)) == ("captured", "voided")
    assert run_audit() == []


def test_actions_need_the_change_permission(client, django_user_model, funded):
    from django.contrib.auth.models import Permission

    held = services.redemption_create(member=funded, points=300, key="h-1", capture=False)
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_redemption"))
    client.force_login(viewer)
    page = client.get(reverse("admin:campaigns_redemption_changelist"))
    assert page.status_code == 200 and page.context["action_form"] is None
    act(client, "void", held)
    assert status_of(held) == "held"


# --- under concurrency (threads, each with its own connection) ------------------------------


def in_threads(n: int, work) -> list:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(n, timeout=30)

    def run(i):
        try:
            barrier.wait()
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as executor:
        return [future.result(timeout=120) for future in [executor.submit(run, i) for i in range(n)]]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_overlapping_uploads_at_once_count_each_code_once(pool):
    # Thread i uploads codes i*50 .. i*50+99: each overlaps the next by half.
    added = in_threads(6, lambda i: services.voucher_codes_upload(
        reward=pool, codes=[f"K-{n:04d}" for n in range(i * 50, i * 50 + 100)]))
    assert sum(added) == VoucherCode.objects.filter(reward=pool).count() == 6 * 50 + 50


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_deleting_free_codes_while_members_redeem_never_deletes_a_given_one(admin_user, program, make_member,
                                                                            pool):
    from django.test import Client

    services.voucher_codes_upload(reward=pool, codes=[f"D-{n}" for n in range(40)])
    members = [make_member(program) for _ in range(6)]
    for n, m in enumerate(members):
        points_earn(member=m, points=10_000, key=f"seed-{n}")
    code_pks = list(VoucherCode.objects.values_list("pk", flat=True))

    def work(i):
        if i == 0:
            client = Client()
            client.force_login(admin_user)
            client.post(reverse("admin:campaigns_vouchercode_changelist"),
                        {"action": "delete_free", "_selected_action": code_pks})
            return 0
        taken = 0
        for n in range(10):
            try:
                services.redemption_create(member=members[i - 1], reward=pool, key=f"r-{i}-{n}")
                taken += 1
            except services.OutOfStock:
                pass
        return taken

    taken = sum(in_threads(7, work))

    redemptions = Redemption.objects.filter(reward=pool)
    assert redemptions.count() == taken
    assert VoucherCode.objects.filter(redemption__isnull=False).count() == taken
    assert not VoucherCode.objects.filter(redemption__isnull=True).exists()
    assert sorted(r.voucher_code for r in redemptions) == sorted(
        VoucherCode.objects.values_list("code", flat=True))
    assert run_audit() == []
