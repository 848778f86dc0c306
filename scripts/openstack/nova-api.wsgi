# WSGI entry point of nova-api for uwsgi (= /usr/bin/nova-api-wsgi of the nova-api package, which
# the project does not install). Reads nova.conf and api-paste.ini from $OS_NOVA_CONFIG_DIR.
from nova.api.openstack.compute.wsgi import init_application

application = init_application()
