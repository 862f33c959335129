"""Seed the demo world through the AWS APIs of the sandbox (so moto holds it all).

The calls are boto3 calls answered by the sandbox's front door in-process (local_calls.py):
the same path as over HTTP, without a socket round trip per call.

Two regions (eu-west-1, us-east-1) each get nine instances (four `Team=platform`, three
`Team=data`, two without a team) with root volumes, a spare volume, a backup snapshot and a
golden AMI per team, and a legacy snapshot. eu-west-1 also gets an Auto Scaling group
(web-1 and web-2), a PostgreSQL RDS instance, SQS queues, S3 buckets and an IAM role per team.
Seeded EC2 ids are `inventory.seeded_id(...)`; everything else is found by name.

The central account also manages an AWS Organization (moto's Organizations): three OUs with
four member accounts each, fixed ids (`MEMBER_ACCOUNTS`, `OU_IDS`). Every member account has
the execution role `AWS-SystemsManager-AutomationExecutionRole` and, in each seeded region, two
instances (`Team=platform`) in its own moto backend: multi-account runs act there. Both are
seeded on first use (`ensure_organization`, `ensure_member`), through the same APIs.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

import contextlib
import threading

from . import local_calls, moto_bridge
from .inventory import SEED_INSTANCES, SEED_REGIONS, forced_ids, seeded_id

TEAMS = ("platform", "data")
HOME_REGION = "eu-west-1"
ASSUME_ROLE_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"Service":"ssm.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
)
# Credentials the sandbox uses for its own calls (seeding, runbook steps); the access key names it.
SELF_CREDENTIALS = {"aws_access_key_id": "AKIASANDBOXSEED00000", "aws_secret_access_key": "sandbox"}


# The organization: OU name -> its four member accounts (ids fixed so the demo can grant them).
ORGANIZATIONAL_UNITS = ("Production", "Staging", "Development")
MEMBER_ACCOUNTS = {
    name: [f"3000000{index + 1}{n:04d}" for n in range(1, 5)] for index, name in enumerate(ORGANIZATIONAL_UNITS)
}
ROOT_ID = "r-dlg0"
OU_IDS = {name: f"ou-dlg0-{name.lower():0<8}" for name in ORGANIZATIONAL_UNITS}
EXECUTION_ROLE = "AWS-SystemsManager-AutomationExecutionRole"
# Delegate's read-only role in each member (DELEGATE_MEMBER_READ_ROLE_NAME): a child execution's
# steps are read where the child runs, in its account and Region (docs/multi-account.md).
MEMBER_READ_ROLE = "DelegateMemberReadOnly"
# Seeding calls for a member account carry this header with the seeding key (server.py honours
# it for that key only), as an operator working in that account would.
SEED_ACCOUNT_HEADER = "x-delegate-sandbox-account"


def _tags(**tags: str | None) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in tags.items() if v]


_session = None  # one boto3 session for every seeding: its model cache saves ~1 s a time


def seed(sandbox) -> None:
    global _session
    if _session is None:
        _session = boto3.session.Session(**SELF_CREDENTIALS)
    session = _session
    config = Config(retries={"mode": "standard", "total_max_attempts": 1})

    def client(service: str, region: str = HOME_REGION):
        made = session.client(service, endpoint_url=sandbox.url, region_name=region, config=config)
        local_calls.attach(made, sandbox)
        return made

    for region in SEED_REGIONS:
        _seed_ec2(client("ec2", region), region)
    _seed_home(client)


def _base_image(ec2, region: str) -> str:
    """The Amazon Linux base image every seeded instance runs (moto's default AMIs are not loaded)."""
    image = seeded_id("ami", region, "al2023")
    with forced_ids(ami=[image]):
        ec2.register_image(
            Name="al2023-ami-2023.6-x86_64",
            Description="Amazon Linux 2023 AMI",
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
        )
    return image


def _seed_ec2(ec2, region: str) -> None:
    zone = region + "a"
    image = _base_image(ec2, region)
    stopped = []
    for index, (name, team, instance_type, state) in enumerate(SEED_INSTANCES):
        key = name or f"untagged-{index}"
        instance_id = seeded_id("i", region, key)
        with forced_ids(i=[instance_id], vol=[seeded_id("vol", region, key + "/root")]):
            ec2.run_instances(
                ImageId=image,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                Placement={"AvailabilityZone": zone},
                TagSpecifications=[
                    spec
                    for spec in (
                        {"ResourceType": "instance", "Tags": _tags(Name=name, Team=team)},
                        {"ResourceType": "volume", "Tags": _tags(Name=f"{key}-root", Team=team)},
                    )
                    if spec["Tags"]
                ],
            )
        if state == "stopped":
            stopped.append(instance_id)
    if stopped:
        ec2.stop_instances(InstanceIds=stopped)
    for team in TEAMS:
        spare = seeded_id("vol", region, f"{team}/spare")
        with forced_ids(vol=[spare]):
            ec2.create_volume(
                Size=20,
                AvailabilityZone=zone,
                VolumeType="gp3",
                TagSpecifications=[{"ResourceType": "volume", "Tags": _tags(Name=f"{team}-spare", Team=team)}],
            )
        with forced_ids(snap=[seeded_id("snap", region, f"{team}/backup")]):
            ec2.create_snapshot(
                VolumeId=spare,
                Description=f"{team} nightly backup",
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": _tags(Name=f"{team}-backup", Team=team)}
                ],
            )
        source = seeded_id("i", region, "web-1" if team == "platform" else "etl-1")
        golden = seeded_id("ami", region, f"{team}/golden")
        with forced_ids(ami=[golden]):
            ec2.create_image(
                InstanceId=source,
                Name=f"{team}-golden-2024",
                Description=f"{team} golden image",
                TagSpecifications=[{"ResourceType": "image", "Tags": _tags(Name=f"{team}-golden", Team=team)}],
            )
    with forced_ids(snap=[seeded_id("snap", region, "untagged/legacy")]):
        ec2.create_snapshot(VolumeId=seeded_id("vol", region, "bastion/root"), Description="legacy snapshot")


def _seed_home(client) -> None:
    ec2 = client("ec2")
    autoscaling = client("autoscaling")
    image = seeded_id("ami", HOME_REGION, "platform/golden")
    ec2.create_launch_template(
        LaunchTemplateName="platform-web",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.medium"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="platform-web",
        LaunchTemplate={"LaunchTemplateName": "platform-web", "Version": "$Latest"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=[HOME_REGION + "a"],
        Tags=[{"Key": "Team", "Value": "platform", "PropagateAtLaunch": True}],
    )
    autoscaling.attach_instances(
        AutoScalingGroupName="platform-web",
        InstanceIds=[seeded_id("i", HOME_REGION, "web-1"), seeded_id("i", HOME_REGION, "web-2")],
    )
    client("rds").create_db_instance(
        DBInstanceIdentifier="platform-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="delegate",
        MasterUserPassword="sandbox-not-secret",
        Tags=_tags(Team="platform"),
    )
    sqs, s3, iam = client("sqs"), client("s3"), client("iam")
    for team in TEAMS:
        sqs.create_queue(QueueName=f"{team}-jobs", tags={"Team": team})
        s3.create_bucket(
            Bucket=f"delegate-sandbox-{team}-logs",
            CreateBucketConfiguration={"LocationConstraint": HOME_REGION},
        )
        s3.put_bucket_tagging(
            Bucket=f"delegate-sandbox-{team}-logs", Tagging={"TagSet": _tags(Team=team)}
        )
        iam.create_role(
            RoleName=f"{team}-automation",
            AssumeRolePolicyDocument=ASSUME_ROLE_POLICY,
            Tags=_tags(Team=team),
        )


@contextlib.contextmanager
def _organization_ids(accounts: list[str], ous: list[str]):
    """moto draws organization, root, OU and account ids at random; the seeded ones are fixed."""
    from moto.organizations import utils

    originals = (utils.make_random_root_id, utils.make_random_ou_id, utils.make_random_account_id)
    account_queue, ou_queue = list(accounts), list(ous)
    utils.make_random_root_id = lambda: ROOT_ID
    utils.make_random_ou_id = lambda root_id: ou_queue.pop(0) if ou_queue else originals[1](root_id)
    # The master account's record draws an id too (moto then sets it to the caller's account).
    utils.make_random_account_id = lambda: account_queue.pop(0) if account_queue else originals[2]()
    try:
        yield
    finally:
        utils.make_random_root_id, utils.make_random_ou_id, utils.make_random_account_id = originals


class _Seeding:
    """Which parts of the organization moto holds now. Seeding the twelve member accounts up front
    would cost every sandbox start several seconds, so the organization is seeded on first use
    (an Organizations call, a call in a member account, a TargetLocations start) and each member
    account the first time anything looks at it. moto_bridge.reset() forgets both."""

    lock = threading.RLock()  # re-entrant: the seeding's own calls pass through the same checks
    generation = -1
    organization = False
    members: set[str] = set()


def _fresh() -> None:
    if _Seeding.generation != moto_bridge.generation():
        _Seeding.generation = moto_bridge.generation()
        _Seeding.organization = False
        _Seeding.members = set()


MEMBERS = frozenset(a for accounts in MEMBER_ACCOUNTS.values() for a in accounts)


def _seed_client(sandbox, service: str, region: str = HOME_REGION, account: str | None = None):
    global _session
    if _session is None:
        _session = boto3.session.Session(**SELF_CREDENTIALS)
    made = _session.client(service, endpoint_url=sandbox.url, region_name=region,
                           config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    local_calls.attach(made, sandbox)
    if account:
        def add_header(request, **_):
            request.headers[SEED_ACCOUNT_HEADER] = account

        made.meta.events.register("before-sign", add_header)
    return made


def ensure_organization(sandbox) -> None:
    """The organization, its OUs and member accounts (not their resources: `ensure_member`)."""
    if not sandbox.seed:
        return
    with _Seeding.lock:
        _fresh()
        if _Seeding.organization:
            return
        _Seeding.organization = True
        orgs = _seed_client(sandbox, "organizations", "us-east-1")
        accounts = [a for name in ORGANIZATIONAL_UNITS for a in MEMBER_ACCOUNTS[name]]
        # The root is an OU to moto and draws an OU id first (its own id is ROOT_ID).
        ous = ["ou-dlg0-rootunit", *(OU_IDS[name] for name in ORGANIZATIONAL_UNITS)]
        with _organization_ids(["000000000000", *accounts], ous):
            orgs.create_organization(FeatureSet="ALL")
            for name in ORGANIZATIONAL_UNITS:
                ou = orgs.create_organizational_unit(ParentId=ROOT_ID, Name=name)["OrganizationalUnit"]["Id"]
                for number, account in enumerate(MEMBER_ACCOUNTS[name], start=1):
                    made = orgs.create_account(Email=f"{name.lower()}-{number}@example.com",
                                               AccountName=f"{name.lower()}-{number}")
                    assert made["CreateAccountStatus"]["AccountId"] == account
                    orgs.move_account(AccountId=account, SourceParentId=ROOT_ID, DestinationParentId=ou)


def ensure_member(sandbox, account: str) -> None:
    """A seeded member account's execution role and its instances (two per seeded region)."""
    if not sandbox.seed or account not in MEMBERS:
        return
    with _Seeding.lock:
        _fresh()
        if account in _Seeding.members:
            return
        ensure_organization(sandbox)
        _Seeding.members.add(account)
        environment = next(name for name, accounts in MEMBER_ACCOUNTS.items() if account in accounts)
        _furnish_member(sandbox, account, SEED_REGIONS, 2, environment=environment.lower())


def _furnish_member(sandbox, account: str, regions, instances: int, *, environment: str) -> None:
    """A member account's roles (the execution role, Delegate's member read role) and, per Region,
    `instances` instances tagged Team=platform and Environment=`environment`."""
    iam = _seed_client(sandbox, "iam", account=account)
    iam.create_role(RoleName=EXECUTION_ROLE, AssumeRolePolicyDocument=ASSUME_ROLE_POLICY)
    iam.create_role(RoleName=MEMBER_READ_ROLE, AssumeRolePolicyDocument=ASSUME_ROLE_POLICY)
    for region in regions:
        ec2 = _seed_client(sandbox, "ec2", region, account=account)
        image = ec2.register_image(Name="al2023-ami-2023.6-x86_64", Architecture="x86_64",
                                   RootDeviceName="/dev/xvda", VirtualizationType="hvm")["ImageId"]
        ec2.run_instances(
            ImageId=image, InstanceType="t3.micro", MinCount=instances, MaxCount=instances,
            Placement={"AvailabilityZone": region + "a"},
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": _tags(Team="platform", Environment=environment)}],
        )


def add_member_accounts(sandbox, ou_name: str, count: int, regions: list[str], instances: int) -> tuple[str, list[str]]:
    """A further OU of `count` new member accounts, for a run at a scale the demo's dozen members
    cannot give (bench/multi_account.py: 50 accounts). Made through the same APIs an operator
    would use: Organizations' CreateOrganizationalUnit, CreateAccount and MoveAccount in the
    central account (moto draws the account ids), then in each new member IAM's CreateRole for
    the execution role and Delegate's member read role, and EC2's RunInstances (`instances` tagged `Team=platform` per Region).
    Returns the OU id and its account ids. The seeded organization is left as it is."""
    ensure_organization(sandbox)
    orgs = _seed_client(sandbox, "organizations", "us-east-1")
    ou = orgs.create_organizational_unit(ParentId=ROOT_ID, Name=ou_name)["OrganizationalUnit"]["Id"]
    accounts = []
    for number in range(1, count + 1):
        made = orgs.create_account(Email=f"{ou_name.lower()}-{number}@example.com",
                                   AccountName=f"{ou_name.lower()}-{number}")["CreateAccountStatus"]
        orgs.move_account(AccountId=made["AccountId"], SourceParentId=ROOT_ID, DestinationParentId=ou)
        accounts.append(made["AccountId"])
    for account in accounts:
        _furnish_member(sandbox, account, regions, instances, environment=ou_name.lower())
    return ou, accounts
