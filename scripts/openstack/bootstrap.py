#!/usr/bin/python3
"""Set up the test OpenStack's contents over its REST APIs (run by up.sh; plain HTTP with
`requests`, one process, because one `openstack` CLI call costs ~1.5 s of imports).

    bootstrap.py catalog   service project, the service users nova/placement/glance/neutron,
                           and the catalog (compute, placement, image, network endpoints)
    bootstrap.py seed      the test projects, users, quotas, flavors, image, network, key pair and
                           application credential; waits until a server can be scheduled, boots
                           and deletes one probe server; writes the credential files

Every step is "get or create", so running it again is harmless. Settings come from the
environment (common.sh exports them): KEYSTONE_URL NOVA_URL PLACEMENT_URL GLANCE_URL NEUTRON_URL
NOTIFICATION_URL OS_HOME.
"""
import os
import shlex
import sys
import time

import requests

KS = os.environ['KEYSTONE_URL']
NOVA = os.environ['NOVA_URL']
PLACEMENT = os.environ['PLACEMENT_URL']
GLANCE = os.environ['GLANCE_URL']
NEUTRON = os.environ['NEUTRON_URL']
NOTIFICATION = os.environ['NOTIFICATION_URL']   # Nova's notifications: amqp://..., exchange "nova"
HOME = os.environ['OS_HOME']
REGION = 'RegionOne'
DOMAIN = 'default'          # id of the domain "Default" made by keystone-manage bootstrap
COMPUTE_MV = 'compute 2.90'

ADMIN = {'user': 'admin', 'password': 'admin', 'project': 'admin'}
# the platform's own credentials: a plain member (not admin) of project "lambda"
LAMBDA = {'user': 'lambda', 'password': 'lambda-secret', 'project': 'lambda'}
# a second project whose instance quota is 1, for tests that must provoke "quota exceeded"
QUOTA = {'user': 'quota-test', 'password': 'quota-test-secret', 'project': 'quota-test'}
LAMBDA_INSTANCES_QUOTA = 100
QUOTA_TEST_INSTANCES_QUOTA = 1
APPCRED = {'name': 'lambda-appcred', 'secret': 'lambda-appcred-secret'}

SERVICES = [  # keystone user (password "<name>-service-secret", see up.sh), type, endpoint URL
    ('nova', 'compute', NOVA),
    ('placement', 'placement', PLACEMENT),
    ('glance', 'image', GLANCE),
    ('neutron', 'network', NEUTRON),
]
FLAVORS = [  # id, name, vcpus, ram MB, disk GB
    ('1', 'm1.tiny', 1, 512, 1),
    ('2', 'm1.small', 1, 2048, 20),
    ('3', 'm1.medium', 2, 4096, 40),
]
IMAGE = 'cirros'                 # 1 MiB of zeros, raw/bare, public: boots fine on the fake driver
NETWORK, SUBNET = 'lambda-net', 'lambda-subnet'
SUBNET_CIDR = '192.0.2.0/24'     # TEST-NET-1: addresses are only database rows, never reachable
PHYSNET = 'lambda-physnet'       # [ml2_type_flat] flat_networks in up.sh
KEYPAIR = 'lambda-key'


class Fail(Exception):
    pass


def call(method, url, token=None, ok=(200, 201, 202, 204), headers=None, **kw):
    h = {'OpenStack-API-Version': COMPUTE_MV} if url.startswith(NOVA) else {}
    if token:
        h['X-Auth-Token'] = token
    h.update(headers or {})
    r = requests.request(method, url, headers=h, timeout=60, **kw)
    if r.status_code not in ok:
        raise Fail('%s %s -> %s %s' % (method, url, r.status_code, r.text[:800]))
    return r


def token(cred, project=True):
    auth = {'identity': {'methods': ['password'], 'password': {'user': {
        'name': cred['user'], 'domain': {'id': DOMAIN}, 'password': cred['password']}}}}
    if project:
        auth['scope'] = {'project': {'name': cred['project'], 'domain': {'id': DOMAIN}}}
    r = call('POST', KS + '/auth/tokens', json={'auth': auth})
    return r.headers['X-Subject-Token'], r.json()['token']


# ---- keystone: get or create -------------------------------------------------------------------
def first(tok, path, key, **params):
    items = call('GET', KS + path, tok, params=params).json()[key]
    return items[0] if items else None


def ensure_project(tok, name, description):
    p = first(tok, '/projects', 'projects', name=name, domain_id=DOMAIN)
    return p or call('POST', KS + '/projects', tok, json={'project': {
        'name': name, 'domain_id': DOMAIN, 'description': description}}).json()['project']


def ensure_user(tok, name, password, project_id=None):
    u = first(tok, '/users', 'users', name=name, domain_id=DOMAIN)
    if u:
        return u
    body = {'name': name, 'domain_id': DOMAIN, 'password': password}
    if project_id:
        body['default_project_id'] = project_id
    return call('POST', KS + '/users', tok, json={'user': body}).json()['user']


def ensure_role(tok, name):
    r = first(tok, '/roles', 'roles', name=name)
    return r or call('POST', KS + '/roles', tok, json={'role': {'name': name}}).json()['role']


def grant(tok, project, user, role):
    call('PUT', KS + '/projects/%s/users/%s/roles/%s' % (project['id'], user['id'], role['id']), tok)


def catalog():
    tok, _ = token(ADMIN)
    service_project = ensure_project(tok, 'service', 'OpenStack service users')
    admin_role = ensure_role(tok, 'admin')
    for name, stype, url in SERVICES:
        user = ensure_user(tok, name, name + '-service-secret', service_project['id'])
        grant(tok, service_project, user, admin_role)
        svc = first(tok, '/services', 'services', type=stype) or call(
            'POST', KS + '/services', tok, json={'service': {'name': name, 'type': stype}}
        ).json()['service']
        for iface in ('public', 'internal', 'admin'):
            if not first(tok, '/endpoints', 'endpoints', service_id=svc['id'], interface=iface):
                call('POST', KS + '/endpoints', tok, json={'endpoint': {
                    'service_id': svc['id'], 'interface': iface, 'url': url, 'region_id': REGION}})


# ---- seed ----------------------------------------------------------------------------------------
def set_compute_quota(tok, project_id, instances):
    # cores/ram unlimited: only the instance count limits, so tests can reason about it
    call('PUT', NOVA + '/os-quota-sets/' + project_id, tok, json={'quota_set': {
        'instances': instances, 'cores': -1, 'ram': -1}})


def ensure_flavors(tok):
    have = {f['name'] for f in call('GET', NOVA + '/flavors', tok).json()['flavors']}
    for fid, name, vcpus, ram, disk in FLAVORS:
        if name not in have:
            call('POST', NOVA + '/flavors', tok, json={'flavor': {
                'id': fid, 'name': name, 'vcpus': vcpus, 'ram': ram, 'disk': disk}})


def ensure_image(tok):
    found = call('GET', GLANCE + '/v2/images', tok, params={'name': IMAGE}).json()['images']
    im = found[0] if found else call('POST', GLANCE + '/v2/images', tok, json={
        'name': IMAGE, 'disk_format': 'raw', 'container_format': 'bare',
        'visibility': 'public', 'os_distro': 'cirros'}).json()
    if im['status'] == 'queued':
        call('PUT', GLANCE + '/v2/images/%s/file' % im['id'], tok, data=b'\0' * 1048576,
             headers={'Content-Type': 'application/octet-stream'})
        im = call('GET', GLANCE + '/v2/images/' + im['id'], tok).json()
    if im['status'] != 'active':
        raise Fail('image %s is %s, not active' % (IMAGE, im['status']))
    return im


def ensure_network(tok):
    nets = call('GET', NEUTRON + '/v2.0/networks', tok, params={'name': NETWORK}).json()['networks']
    net = nets[0] if nets else call('POST', NEUTRON + '/v2.0/networks', tok, json={'network': {
        'name': NETWORK, 'shared': True, 'provider:network_type': 'flat',
        'provider:physical_network': PHYSNET}}).json()['network']
    subs = call('GET', NEUTRON + '/v2.0/subnets', tok,
                params={'name': SUBNET, 'network_id': net['id']}).json()['subnets']
    if not subs:
        # no DHCP: there is no DHCP agent, and nothing would ask it
        call('POST', NEUTRON + '/v2.0/subnets', tok, json={'subnet': {
            'name': SUBNET, 'network_id': net['id'], 'ip_version': 4, 'cidr': SUBNET_CIDR,
            'enable_dhcp': False}})
    return net


def ensure_appcred(user_tok, user_id):
    base = KS + '/users/%s/application_credentials' % user_id
    found = call('GET', base, user_tok, params={'name': APPCRED['name']}).json()['application_credentials']
    if found:  # the secret is never shown again: recreate
        call('DELETE', base + '/' + found[0]['id'], user_tok)
    return call('POST', base, user_tok, json={'application_credential': {
        'name': APPCRED['name'], 'secret': APPCRED['secret'],
        'description': 'contract tests of the Rust OpenStack client'}}).json()['application_credential']


def ensure_keypair(user_tok):
    path = os.path.join(HOME, KEYPAIR)
    r = call('GET', NOVA + '/os-keypairs/' + KEYPAIR, user_tok, ok=(200, 404))
    if r.status_code == 200 and os.path.exists(path):
        return
    if r.status_code == 200:
        call('DELETE', NOVA + '/os-keypairs/' + KEYPAIR, user_tok)
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH).decode()
    call('POST', NOVA + '/os-keypairs', user_tok, json={'keypair': {
        'name': KEYPAIR, 'type': 'ssh', 'public_key': pub}})
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'wb') as f:
        f.write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
    with open(path + '.pub', 'w') as f:
        f.write(pub + '\n')


def wait_schedulable(tok, timeout=240):
    """The compute host is usable once nova-compute reported its inventory to placement and the
    scheduler's periodic discover_hosts mapped it to cell1 (only then is it listed here)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        # microversion < 2.88: no uptime in the list, so no RPC call to the compute host
        hvs = call('GET', NOVA + '/os-hypervisors/detail', tok,
                   headers={'OpenStack-API-Version': 'compute 2.53'}).json()['hypervisors']
        if any(h['state'] == 'up' and h['status'] == 'enabled' for h in hvs):
            rps = call('GET', PLACEMENT + '/resource_providers', tok).json()['resource_providers']
            for rp in rps:
                inv = call('GET', PLACEMENT + '/resource_providers/%s/inventories' % rp['uuid'],
                           tok).json()['inventories']
                if 'VCPU' in inv and 'MEMORY_MB' in inv:
                    return
        time.sleep(0.5)
    raise Fail('the compute host did not become schedulable within %ds '
               '(see log/nova-compute.log, log/nova-scheduler.log)' % timeout)


def probe_server(tok, image_id, net_id):
    """Boot one server on the network and delete it: proves scheduling, port binding and the
    fake driver work before any test relies on them."""
    t0 = time.time()
    sid = call('POST', NOVA + '/servers', tok, json={'server': {
        'name': 'lambda-os-probe', 'imageRef': image_id, 'flavorRef': '1',
        'networks': [{'uuid': net_id}]}}).json()['server']['id']
    try:
        while True:
            s = call('GET', NOVA + '/servers/' + sid, tok).json()['server']
            if s['status'] == 'ACTIVE':
                break
            if s['status'] == 'ERROR' or time.time() - t0 > 120:
                raise Fail('probe server %s is %s: %s (see log/nova-compute.log)'
                           % (sid, s['status'], s.get('fault')))
            time.sleep(0.3)
    finally:
        call('DELETE', NOVA + '/servers/' + sid, tok, ok=(204, 404))
    while call('GET', NOVA + '/servers/' + sid, tok, ok=(200, 404)).status_code != 404:
        if time.time() - t0 > 180:
            raise Fail('probe server %s was not deleted' % sid)
        time.sleep(0.3)


# ---- credential files ----------------------------------------------------------------------------
COMMON_ENV = [('OS_AUTH_URL', KS), ('OS_IDENTITY_API_VERSION', '3'),
              ('OS_REGION_NAME', REGION), ('OS_INTERFACE', 'public')]
PASSWORD_VARS = ['OS_USERNAME', 'OS_PASSWORD', 'OS_PROJECT_NAME', 'OS_USER_DOMAIN_NAME',
                 'OS_PROJECT_DOMAIN_NAME']
APPCRED_VARS = ['OS_APPLICATION_CREDENTIAL_ID', 'OS_APPLICATION_CREDENTIAL_SECRET',
                'OS_APPLICATION_CREDENTIAL_NAME']


def write(name, text, mode=0o600):
    path = os.path.join(HOME, name)
    with open(os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def openrc(name, title, variables, unset):
    lines = ['# %s' % title,
             '# written by scripts/openstack/up.sh; use: . %s' % os.path.join(HOME, name),
             'unset OS_CLOUD OS_TOKEN OS_AUTH_TYPE ' + ' '.join(unset)]
    lines += ['export %s=%s' % (k, shlex.quote(v)) for k, v in COMMON_ENV + variables]
    return '\n'.join(lines) + '\n'


def password_openrc(name, title, cred):
    return openrc(name, title, [('OS_AUTH_TYPE', 'password'), ('OS_USERNAME', cred['user']),
                          ('OS_PASSWORD', cred['password']), ('OS_PROJECT_NAME', cred['project']),
                          ('OS_USER_DOMAIN_NAME', 'Default'),
                          ('OS_PROJECT_DOMAIN_NAME', 'Default')], APPCRED_VARS)


def yaml_cloud(name, comment, auth, auth_type='password'):
    q = lambda v: '"%s"' % v  # noqa: E731 (values are plain ASCII without quotes)
    lines = ['  # ' + comment, '  %s:' % name, '    auth_type: ' + q(auth_type), '    auth:',
             '      auth_url: ' + q(KS)]
    lines += ['      %s: %s' % (k, q(v)) for k, v in auth]
    lines += ['    region_name: ' + q(REGION), '    interface: "public"',
              '    identity_api_version: 3']
    return '\n'.join(lines)


def password_auth(cred):
    return [('username', cred['user']), ('password', cred['password']),
            ('project_name', cred['project']), ('user_domain_name', 'Default'),
            ('project_domain_name', 'Default')]


def write_files(ac, image, net, quota_project):
    write('openrc', password_openrc('openrc',
        'project "lambda", user "lambda" (role member): the platform\'s credentials', LAMBDA))
    write('openrc-appcred', openrc('openrc-appcred',
        'application credential "%s" of user "lambda" on project "lambda"' % APPCRED['name'],
        [('OS_AUTH_TYPE', 'v3applicationcredential'),
         ('OS_APPLICATION_CREDENTIAL_ID', ac['id']),
         ('OS_APPLICATION_CREDENTIAL_SECRET', APPCRED['secret'])], PASSWORD_VARS))
    write('openrc-quota', password_openrc('openrc-quota',
        'project "quota-test" (instances quota %d), user "quota-test": provoke quota errors'
        % QUOTA_TEST_INSTANCES_QUOTA, QUOTA))
    write('openrc-admin', password_openrc('openrc-admin', 'cloud admin (project "admin")', ADMIN))
    clouds = ['# written by scripts/openstack/up.sh: the test OpenStack on 127.0.0.1',
              '# use: OS_CLIENT_CONFIG_FILE=%s/clouds.yaml OS_CLOUD=lambda-test' % HOME,
              'clouds:',
              yaml_cloud('lambda-test', 'project lambda, user lambda (member)',
                         password_auth(LAMBDA)),
              yaml_cloud('lambda-test-appcred', 'the same, by application credential',
                         [('application_credential_id', ac['id']),
                          ('application_credential_secret', APPCRED['secret'])],
                         'v3applicationcredential'),
              yaml_cloud('lambda-test-quota', 'project quota-test: instances quota %d'
                         % QUOTA_TEST_INSTANCES_QUOTA, password_auth(QUOTA)),
              yaml_cloud('lambda-test-admin', 'cloud admin', password_auth(ADMIN))]
    write('clouds.yaml', '\n'.join(clouds) + '\n')
    facts = [
        ('LAMBDA_OS_HOME', HOME),
        ('LAMBDA_OS_OPENRC', HOME + '/openrc'),
        ('LAMBDA_OS_OPENRC_APPCRED', HOME + '/openrc-appcred'),
        ('LAMBDA_OS_OPENRC_QUOTA_TEST', HOME + '/openrc-quota'),
        ('LAMBDA_OS_OPENRC_ADMIN', HOME + '/openrc-admin'),
        ('LAMBDA_OS_CLOUDS_YAML', HOME + '/clouds.yaml'),
        ('LAMBDA_OS_CLOUD', 'lambda-test'),
        ('LAMBDA_OS_CLOUD_APPCRED', 'lambda-test-appcred'),
        ('LAMBDA_OS_CLOUD_QUOTA_TEST', 'lambda-test-quota'),
        ('LAMBDA_OS_CLOUD_ADMIN', 'lambda-test-admin'),
        ('LAMBDA_OS_AUTH_URL', KS),
        ('LAMBDA_OS_COMPUTE_URL', NOVA),
        ('LAMBDA_OS_IMAGE_URL', GLANCE),
        ('LAMBDA_OS_NETWORK_URL', NEUTRON),
        ('LAMBDA_OS_PLACEMENT_URL', PLACEMENT),
        ('LAMBDA_OS_NOTIFICATION_URL', NOTIFICATION),
        ('LAMBDA_OS_COMPUTE_MAX_MICROVERSION', '2.93'),
        ('LAMBDA_OS_FLAVOR', 'm1.small'), ('LAMBDA_OS_FLAVOR_ID', '2'),
        ('LAMBDA_OS_FLAVOR_TINY', 'm1.tiny'), ('LAMBDA_OS_FLAVOR_TINY_ID', '1'),
        ('LAMBDA_OS_FLAVOR_MEDIUM', 'm1.medium'), ('LAMBDA_OS_FLAVOR_MEDIUM_ID', '3'),
        ('LAMBDA_OS_IMAGE', IMAGE), ('LAMBDA_OS_IMAGE_ID', image['id']),
        ('LAMBDA_OS_NETWORK', NETWORK), ('LAMBDA_OS_NETWORK_ID', net['id']),
        ('LAMBDA_OS_KEYPAIR', KEYPAIR), ('LAMBDA_OS_KEYPAIR_PRIVATE_KEY', HOME + '/' + KEYPAIR),
        ('LAMBDA_OS_PROJECT', LAMBDA['project']),
        ('LAMBDA_OS_PROJECT_INSTANCES_QUOTA', str(LAMBDA_INSTANCES_QUOTA)),
        ('LAMBDA_OS_QUOTA_TEST_PROJECT', QUOTA['project']),
        ('LAMBDA_OS_QUOTA_TEST_PROJECT_ID', quota_project['id']),
        ('LAMBDA_OS_QUOTA_TEST_INSTANCES_QUOTA', str(QUOTA_TEST_INSTANCES_QUOTA)),
        ('LAMBDA_OS_APPCRED_ID', ac['id']),
    ]
    write('env', '# facts about the test OpenStack, written by scripts/openstack/up.sh\n'
          + ''.join('export %s=%s\n' % (k, shlex.quote(v)) for k, v in facts), 0o644)


def seed(probe=True):
    tok, _ = token(ADMIN)
    member = ensure_role(tok, 'member')
    projects = {}
    for cred, desc in ((LAMBDA, 'the platform\'s project'),
                       (QUOTA, 'instances quota %d: for quota-exceeded tests'
                        % QUOTA_TEST_INSTANCES_QUOTA)):
        p = projects[cred['project']] = ensure_project(tok, cred['project'], desc)
        grant(tok, p, ensure_user(tok, cred['user'], cred['password'], p['id']), member)

    admin_project = first(tok, '/projects', 'projects', name='admin', domain_id=DOMAIN)
    call('PUT', NOVA + '/os-quota-sets/' + admin_project['id'], tok, json={'quota_set': {
        'instances': -1, 'cores': -1, 'ram': -1}})
    set_compute_quota(tok, projects['lambda']['id'], LAMBDA_INSTANCES_QUOTA)
    set_compute_quota(tok, projects['quota-test']['id'], QUOTA_TEST_INSTANCES_QUOTA)

    ensure_flavors(tok)
    image = ensure_image(tok)
    net = ensure_network(tok)

    lambda_tok, body = token(LAMBDA)
    ac = ensure_appcred(lambda_tok, body['user']['id'])
    ensure_keypair(lambda_tok)

    wait_schedulable(tok)
    if probe:
        probe_server(tok, image['id'], net['id'])
    write_files(ac, image, net, projects['quota-test'])


if __name__ == '__main__':
    try:
        if sys.argv[1:] == ['catalog']:
            catalog()
        elif sys.argv[1:2] == ['seed']:
            seed(probe='--no-probe' not in sys.argv)
        else:
            sys.exit('usage: bootstrap.py catalog | seed [--no-probe]')
    except (Fail, requests.RequestException) as e:
        sys.exit('bootstrap.py %s: %s' % (' '.join(sys.argv[1:]), e))
