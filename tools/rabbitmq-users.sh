#!/bin/bash
# Create (or update) a least-privilege RabbitMQ user for hypervisor-notifier.
#
# Usage: tools/rabbitmq-users.sh ROLE USER PASSWORD [VHOST]
#   ROLE      notifier: may declare and write only the exchange and the
#                       per-host queues <topic>.<host>; reads (consumes) no
#                       queue.
#             consumer: may declare, bind and consume only <topic>.* queues;
#                       may neither publish to nor configure the exchange.
#   VHOST     default "/"; created if missing.
# Environment:
#   RABBITMQCTL  the rabbitmqctl command (default: rabbitmqctl)
#   HN_EXCHANGE  [publisher] exchange (default: hypervisor)
#   HN_TOPIC     [publisher] topic (default: hypervisor_events)
#   HN_HOST      optional: limit the user to this compute host's queue
#                <topic>.<host> (a consumer keeps its <topic>.subscriber.*
#                queues, for hypervisor-events watch)
#
# Idempotent: an existing user gets the password and permissions given now.
# The password is an argument of rabbitmqctl, as rabbitmqctl requires: it is
# visible in this host's process list while rabbitmqctl runs.
set -euo pipefail

usage() {
    # The header comment, up to its first empty line.
    sed -n '3,/^#$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

if [[ $# -lt 3 || $# -gt 4 ]]; then
    usage
fi
role=$1
user=$2
password=$3
vhost=${4:-/}
exchange=${HN_EXCHANGE:-hypervisor}
topic=${HN_TOPIC:-hypervisor_events}
read -r -a ctl <<< "${RABBITMQCTL:-rabbitmqctl}"

# Names go into regular expressions: escape what is special there.
regex_quote() {
    printf '%s' "$1" | sed 's/[][\\.^$*+?(){}|]/\\&/g'
}

ex=$(regex_quote "$exchange")
if [[ -n ${HN_HOST:-} ]]; then
    host_queues="$(regex_quote "$topic")\\.$(regex_quote "$HN_HOST")"
    consumer_queues="$host_queues|$(regex_quote "$topic")\\.subscriber\\..+"
else
    host_queues="$(regex_quote "$topic")\\..+"
    consumer_queues=$host_queues
fi

# configure / write / read, as RabbitMQ checks them:
#   exchange.declare: configure on the exchange; queue.declare: configure on
#   the queue; queue.bind: write on the queue and read on the exchange;
#   basic.publish: write on the exchange; basic.consume: read on the queue.
# A passive exchange.declare (the consumer's) needs no permission.
case $role in
    notifier)
        configure="^($ex|$host_queues)\$"
        write="^($ex|$host_queues)\$"
        read="^$ex\$"
        ;;
    consumer)
        configure="^($consumer_queues)\$"
        write="^($consumer_queues)\$"
        read="^($ex|$consumer_queues)\$"
        ;;
    *)
        echo "unknown role '$role': use notifier or consumer" >&2
        usage
        ;;
esac

if ! "${ctl[@]}" -q list_vhosts name | grep -qxF -- "$vhost"; then
    "${ctl[@]}" -q add_vhost "$vhost"
fi
if "${ctl[@]}" -q list_users --no-table-headers | cut -f1 |
    grep -qxF -- "$user"; then
    "${ctl[@]}" -q change_password "$user" "$password"
else
    "${ctl[@]}" -q add_user "$user" "$password"
fi
"${ctl[@]}" -q set_permissions -p "$vhost" "$user" \
    "$configure" "$write" "$read"
echo "rabbitmq user '$user' ($role) on vhost '$vhost':" \
    "configure '$configure' write '$write' read '$read'"
