#!/usr/bin/python3
"""End-to-end check of the running test OpenStack (scripts/openstack/up.sh), raw HTTP as a
client does it, with the credentials up.sh wrote:

    /usr/bin/python3 scripts/openstack/smoke.py     (state dir: $LAMBDA_HOME/openstack)

password and application-credential tokens and the catalog; flavors, image, network; a server
with user-data, metadata, tags, key pair and a port on lambda-net -> ACTIVE; list by tag and by
metadata; createImage -> image active; delete; the quota-test project's second server -> 403
quota exceeded. Cleans up what it made, prints timings, exits non-zero on the first failure.
"""
import base64
import os
import shlex
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
HOME = os.environ.get('OS_HOME') or os.path.join(
    os.environ.get('LAMBDA_HOME') or os.path.join(HERE, '..', '..', '.lambda'), 'openstack')
MV = 'compute 2.90'   # >= 2.52 tags at create, >= 2.37 "networks": "none", >= 2.45 createImage body
timings = {}


def load(name):
    env = {}
    with open(os.path.join(HOME, name)) as f:
        for line in f:
            if line.startswith('export '):
                k, v = line[len('export '):].rstrip('\n').split('=', 1)
                env[k] = shlex.split(v)[0] if v else ''
    return env


def check(cond, what):
    if not cond:
        sys.exit('FAIL: ' + what)


def authenticate(rc):
    ident = ({'methods': ['application_credential'], 'application_credential': {
        'id': rc['OS_APPLICATION_CREDENTIAL_ID'], 'secret': rc['OS_APPLICATION_CREDENTIAL_SECRET']}}
        if rc.get('OS_AUTH_TYPE') == 'v3applicationcredential' else
        {'methods': ['password'], 'password': {'user': {
            'name': rc['OS_USERNAME'], 'password': rc['OS_PASSWORD'],
            'domain': {'name': rc['OS_USER_DOMAIN_NAME']}}}})
    auth = {'identity': ident}
    if 'OS_PROJECT_NAME' in rc:
        auth['scope'] = {'project': {'name': rc['OS_PROJECT_NAME'],
                                     'domain': {'name': rc['OS_PROJECT_DOMAIN_NAME']}}}
    r = requests.post(rc['OS_AUTH_URL'] + '/auth/tokens', json={'auth': auth}, timeout=30)
    check(r.status_code == 201, 'token: %s %s' % (r.status_code, r.text[:300]))
    ep = {s['type']: e['url'] for s in r.json()['token']['catalog'] for e in s['endpoints']
          if e['interface'] == rc['OS_INTERFACE'] and e['region_id'] == rc['OS_REGION_NAME']}
    return Client(r.headers['X-Subject-Token'], ep)


class Client:
    def __init__(self, token, ep):
        self.token, self.ep = token, ep

    def __call__(self, method, service, path, ok=(200, 201, 202, 204), **kw):
        h = {'X-Auth-Token': self.token, 'OpenStack-API-Version': MV}
        h.update(kw.pop('headers', {}))
        r = requests.request(method, self.ep[service] + path, headers=h, timeout=60, **kw)
        check(r.status_code in ok, '%s %s %s -> %s %s'
              % (method, service, path, r.status_code, r.text[:500]))
        return r


def wait(what, fn, timeout=120):
    t0 = time.time()
    while True:
        v = fn()
        if v:
            return v
        check(time.time() - t0 < timeout, 'timeout waiting for ' + what)
        time.sleep(0.2)


def server_status(c, sid):
    s = c('GET', 'compute', '/servers/' + sid).json()['server']
    check(s['status'] != 'ERROR', 'server %s ERROR: %s' % (sid, s.get('fault')))
    return s if s['status'] == 'ACTIVE' and not s.get('OS-EXT-STS:task_state') else None


def delete_server(c, sid):
    c('DELETE', 'compute', '/servers/' + sid, ok=(204, 404))
    wait('delete of ' + sid,
         lambda: c('GET', 'compute', '/servers/' + sid, ok=(200, 404)).status_code == 404)


def main():
    facts = load('env')
    t0 = time.time()
    c = authenticate(load('openrc'))
    timings['password token'] = time.time() - t0
    for t in ('identity', 'compute', 'image', 'network', 'placement'):
        check(t in c.ep, 'catalog has no %s endpoint: %s' % (t, c.ep))
    print('token + catalog:', c.ep)

    t0 = time.time()
    ac = authenticate(load('openrc-appcred'))
    timings['appcred token'] = time.time() - t0
    ac('GET', 'compute', '/servers')
    ac('GET', 'compute', '/flavors/' + facts['LAMBDA_OS_FLAVOR_ID'])
    print('application credential: token, servers, flavor ok')

    flavors = {f['name']: f['id'] for f in c('GET', 'compute', '/flavors').json()['flavors']}
    check({'m1.tiny', 'm1.small', 'm1.medium'} <= set(flavors), 'flavors: %s' % flavors)
    img = c('GET', 'image', '/v2/images/' + facts['LAMBDA_OS_IMAGE_ID']).json()
    check(img['name'] == 'cirros' and img['status'] == 'active', 'image: %s' % img)
    net = c('GET', 'network', '/v2.0/networks/' + facts['LAMBDA_OS_NETWORK_ID']).json()['network']
    check(net['name'] == 'lambda-net', 'network: %s' % net)
    c('GET', 'compute', '/os-keypairs/' + facts['LAMBDA_OS_KEYPAIR'])
    print('flavors:', flavors, '| image cirros active | network lambda-net | key pair')

    t0 = time.time()
    sid = c('POST', 'compute', '/servers', json={'server': {
        'name': 'smoke-vm', 'imageRef': img['id'], 'flavorRef': flavors['m1.small'],
        'networks': [{'uuid': net['id']}], 'key_name': facts['LAMBDA_OS_KEYPAIR'],
        'user_data': base64.b64encode(b'#!/bin/sh\necho hello\n').decode(),
        'metadata': {'lambda.owner': 'smoke', 'lambda.pool': 'p1'},
        'tags': ['lambda', 'smoke']}}).json()['server']['id']
    s = wait('server ACTIVE', lambda: server_status(c, sid))
    timings['create -> ACTIVE'] = time.time() - t0
    check(s['metadata'].get('lambda.owner') == 'smoke', 'metadata: %s' % s['metadata'])
    check(sorted(s['tags']) == ['lambda', 'smoke'], 'tags: %s' % s['tags'])
    check('lambda-net' in s['addresses'], 'addresses: %s' % s['addresses'])
    print('server', sid, 'ACTIVE, addresses', s['addresses'])

    by_tag = c('GET', 'compute', '/servers?tags=smoke').json()['servers']
    check([x['id'] for x in by_tag] == [sid], 'servers?tags=smoke: %s' % by_tag)
    none = c('GET', 'compute', '/servers?tags=no-such-tag').json()['servers']
    check(none == [], 'servers?tags=no-such-tag: %s' % none)
    c('PUT', 'compute', '/servers/%s/tags/extra' % sid, ok=(201, 204))
    c('POST', 'compute', '/servers/%s/metadata' % sid, json={'metadata': {'k2': 'v2'}})
    md = c('GET', 'compute', '/servers/%s/metadata' % sid).json()['metadata']
    check(md.get('k2') == 'v2', 'metadata: %s' % md)
    print('list by tag, tags and metadata updates ok')

    t0 = time.time()
    r = c('POST', 'compute', '/servers/%s/action' % sid,
          json={'createImage': {'name': 'smoke-snap', 'metadata': {'lambda.kind': 'snapshot'}}})
    image_id = r.json()['image_id']

    def snapshot_active():
        i = c('GET', 'image', '/v2/images/' + image_id).json()
        check(i['status'] in ('queued', 'saving', 'active'), 'snapshot image is ' + i['status'])
        return i if i['status'] == 'active' else None
    im = wait('snapshot image active', snapshot_active, 60)
    timings['createImage -> active'] = time.time() - t0
    wait('server task_state cleared', lambda: server_status(c, sid))
    print('createImage ->', image_id, 'active, size', im['size'], 'property lambda.kind =',
          im.get('lambda.kind'))

    t0 = time.time()
    delete_server(c, sid)
    timings['delete -> 404'] = time.time() - t0
    c('DELETE', 'image', '/v2/images/' + image_id)
    print('server and snapshot deleted')

    q = authenticate(load('openrc-quota'))
    limit = int(facts['LAMBDA_OS_QUOTA_TEST_INSTANCES_QUOTA'])
    made = []
    try:
        for i in range(limit):
            made.append(q('POST', 'compute', '/servers', json={'server': {
                'name': 'quota-%d' % i, 'imageRef': img['id'], 'flavorRef': flavors['m1.tiny'],
                'networks': 'none'}}).json()['server']['id'])
        # Nova counts instances once they are out of scheduling (until then two concurrent
        # creates can both pass; the conductor's recheck then puts the extra one in ERROR):
        # wait for ACTIVE, then the next create is refused at once with 403
        for sid in made:
            wait('quota-test server ACTIVE', lambda: server_status(q, sid))
        r = q('POST', 'compute', '/servers', ok=(403,), json={'server': {
            'name': 'quota-over', 'imageRef': img['id'], 'flavorRef': flavors['m1.tiny'],
            'networks': 'none'}})
        print('quota-test: server %d of %d ->' % (limit + 1, limit), r.status_code, r.json())
        check('Quota exceeded' in r.text, 'quota error text: ' + r.text)
    finally:
        for sid in made:
            delete_server(q, sid)
    print('timings (s):', {k: round(v, 2) for k, v in timings.items()})
    print('smoke: 1 passed, 0 failed')


if __name__ == '__main__':
    main()
