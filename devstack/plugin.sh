#!/bin/bash
# shellcheck disable=SC2154
# (NOVA_CONF, RABBIT_PASSWORD and friends are devstack's globals.)
#
# DevStack plugin of hypervisor-notifier: runs the notifier next to
# nova-compute and, with HYPERVISOR_NOTIFIER_NOVA_CONSUMER=True, makes
# nova-compute take its lifecycle events from the bus. stack.sh, unstack.sh
# and clean.sh source it as:
#
#   source devstack/plugin.sh stack install|post-config|extra
#   source devstack/plugin.sh unstack
#   source devstack/plugin.sh clean
#
# Settings: devstack/settings.

# The service's own transport-URL parser, for this plugin: no second one in
# bash. Its input (a URL, a password) comes on standard input, out of the
# process list. It needs only the standard library and the source tree.
# Usage: hypervisor_notifier_url_tool COMMAND [ARG]   (see its --help)
function hypervisor_notifier_url_tool {
    PYTHONPATH=$HYPERVISOR_NOTIFIER_DIR${PYTHONPATH:+:$PYTHONPATH} \
        "$HYPERVISOR_NOTIFIER_PYTHON" -m hypervisor_notifier.transport_url "$@"
}

# transport_url with every broker's credentials replaced, percent-encoded.
# Usage: hypervisor_notifier_url_for URL USER PASSWORD
function hypervisor_notifier_url_for {
    printf '%s\n%s\n' "$1" "$3" | hypervisor_notifier_url_tool with-credentials "$2"
}

# nova's transport_url, with USER's credentials when
# HYPERVISOR_NOTIFIER_RABBIT_USERS is True.
# Usage: hypervisor_notifier_transport_url USER
function hypervisor_notifier_transport_url {
    local url
    url=$(iniget "$NOVA_CONF" DEFAULT transport_url)
    if [[ $HYPERVISOR_NOTIFIER_RABBIT_USERS == True ]]; then
        url=$(hypervisor_notifier_url_for "$url" "$1" \
            "$HYPERVISOR_NOTIFIER_RABBIT_PASSWORD") ||
            die $LINENO "hypervisor-notifier: $NOVA_CONF [DEFAULT] transport_url" \
                "cannot be used (see above)"
    fi
    echo "$url"
}

# The virtual host of a transport URL, decoded ("/" when it names none).
function hypervisor_notifier_vhost_of {
    printf '%s\n' "$1" | hypervisor_notifier_url_tool vhost
}

function install_hypervisor_notifier {
    # -bindep: the Debian packages of bindep.txt's default profile
    # (libvirt-dev and its compiler for libvirt-python).
    setup_develop -bindep "$HYPERVISOR_NOTIFIER_DIR" "$HYPERVISOR_NOTIFIER_EXTRAS"
}

# Create the RabbitMQ users where the broker runs (see devstack/settings).
# Usage: create_hypervisor_notifier_rabbit_users VHOST
function create_hypervisor_notifier_rabbit_users {
    local vhost=$1
    local script=$HYPERVISOR_NOTIFIER_RABBIT_USERS_SCRIPT
    if [[ ! -f $script ]]; then
        die $LINENO "hypervisor-notifier: $script not found; set" \
            "HYPERVISOR_NOTIFIER_RABBIT_USERS=False to use nova's credentials"
    fi
    local -a roles=("notifier $HYPERVISOR_NOTIFIER_RABBIT_USER")
    if [[ $HYPERVISOR_NOTIFIER_NOVA_CONSUMER == True ]]; then
        roles+=("consumer $HYPERVISOR_NOTIFIER_RABBIT_CONSUMER_USER")
    fi
    local role_user role user
    for role_user in "${roles[@]}"; do
        read -r role user <<< "$role_user"
        RABBITMQCTL="sudo rabbitmqctl" \
            HN_EXCHANGE=$HYPERVISOR_NOTIFIER_EXCHANGE \
            HN_TOPIC=$HYPERVISOR_NOTIFIER_TOPIC \
            bash "$script" "$role" "$user" "$HYPERVISOR_NOTIFIER_RABBIT_PASSWORD" "$vhost"
    done
}

# The backend that watches what nova's compute_driver $1 drives, if any.
function hypervisor_notifier_backend_for {
    case $1 in
        libvirt.LibvirtDriver) echo libvirt ;;
        vmwareapi.VMwareVCDriver) echo esx ;;
    esac
}

# [esx] from nova's [vmware] options.
function configure_hypervisor_notifier_esx {
    local option value
    for option in host_ip:host host_port:port host_username:username \
            host_password:password cluster_name:cluster ca_file:ca_file \
            insecure:insecure; do
        value=$(iniget "$NOVA_CONF" vmware "${option%%:*}")
        if [[ -n $value ]]; then
            iniset "$HYPERVISOR_NOTIFIER_CONF" esx "${option#*:}" "$value"
        fi
    done
}

# The signing key: HYPERVISOR_NOTIFIER_SIGNING_KEY, or 64 hex digits derived
# from SERVICE_PASSWORD (the signer wants at least 32 bytes).
function hypervisor_notifier_signing_key {
    if [[ -n $HYPERVISOR_NOTIFIER_SIGNING_KEY ]]; then
        echo "$HYPERVISOR_NOTIFIER_SIGNING_KEY"
    elif [[ -n ${SERVICE_PASSWORD:-} ]]; then
        printf 'hypervisor-notifier:%s' "$SERVICE_PASSWORD" | sha256sum | cut -d' ' -f1
    else
        die $LINENO "hypervisor-notifier: set HYPERVISOR_NOTIFIER_SIGNING_KEY" \
            "(or SERVICE_PASSWORD), or HYPERVISOR_NOTIFIER_SIGN_EVENTS=False"
    fi
}

# The config file, from nova's: the host, the backend from its
# compute_driver, and its transport URL (with the notifier's user).
function configure_hypervisor_notifier {
    local conf=$HYPERVISOR_NOTIFIER_CONF
    local driver backend nova_url vhost url host uri
    driver=$(iniget "$NOVA_CONF" DEFAULT compute_driver)
    backend=$(hypervisor_notifier_backend_for "$driver")
    if [[ -z $backend ]]; then
        die $LINENO "hypervisor-notifier: no backend for nova's compute_driver" \
            "'$driver' (libvirt.LibvirtDriver or vmwareapi.VMwareVCDriver)"
    fi
    nova_url=$(iniget "$NOVA_CONF" DEFAULT transport_url)
    if [[ -z $nova_url ]]; then
        die $LINENO "hypervisor-notifier: $NOVA_CONF has no [DEFAULT] transport_url"
    fi
    if [[ $HYPERVISOR_NOTIFIER_RABBIT_USERS == True ]] && is_service_enabled rabbit; then
        vhost=$(hypervisor_notifier_vhost_of "$nova_url") ||
            die $LINENO "hypervisor-notifier: $NOVA_CONF [DEFAULT] transport_url" \
                "cannot be used (see above)"
        create_hypervisor_notifier_rabbit_users "$vhost"
    fi
    url=$(hypervisor_notifier_transport_url "$HYPERVISOR_NOTIFIER_RABBIT_USER") || exit 1

    sudo install -d -o "$STACK_USER" -m 0755 "$HYPERVISOR_NOTIFIER_CONF_DIR"
    install -d -m 0700 "$HYPERVISOR_NOTIFIER_STATE_DIR"
    rm -f "$conf"
    # Passwords go in there: readable by the stack user only.
    install -m 0600 /dev/null "$conf"

    host=$(iniget "$NOVA_CONF" DEFAULT host)
    iniset "$conf" DEFAULT host "${host:-$(hostname)}"
    iniset "$conf" DEFAULT backend "$backend"
    if [[ $backend == libvirt ]]; then
        uri=$(iniget "$NOVA_CONF" libvirt connection_uri)
        iniset "$conf" libvirt connection_uri "${uri:-qemu:///system}"
    else
        configure_hypervisor_notifier_esx
    fi
    iniset "$conf" publisher transport_url "$url"
    iniset "$conf" publisher exchange "$HYPERVISOR_NOTIFIER_EXCHANGE"
    iniset "$conf" publisher topic "$HYPERVISOR_NOTIFIER_TOPIC"
    iniset "$conf" outbox path "$HYPERVISOR_NOTIFIER_STATE_DIR/outbox.sqlite"
    iniset "$conf" health port "$HYPERVISOR_NOTIFIER_HEALTH_PORT"
    if [[ $HYPERVISOR_NOTIFIER_SIGN_EVENTS == True ]]; then
        iniset "$conf" signing key "$(hypervisor_notifier_signing_key)"
    fi
}

# nova.conf's [hypervisor_notifier]: read by hypervisor-notifier-nova-compute.
# Written to $NOVA_CONF: devstack copies it to $NOVA_CPU_CONF when it starts
# n-cpu, after post-config.
function configure_nova_for_hypervisor_notifier {
    local url
    url=$(hypervisor_notifier_transport_url "$HYPERVISOR_NOTIFIER_RABBIT_CONSUMER_USER") ||
        exit 1
    # Explicit even without users: n-cpu's own [DEFAULT] transport_url may
    # name a cell's vhost, where the notifier does not publish.
    iniset "$NOVA_CONF" hypervisor_notifier source bus
    iniset "$NOVA_CONF" hypervisor_notifier transport_url "$url"
    iniset "$NOVA_CONF" hypervisor_notifier exchange "$HYPERVISOR_NOTIFIER_EXCHANGE"
    iniset "$NOVA_CONF" hypervisor_notifier topic "$HYPERVISOR_NOTIFIER_TOPIC"
    if [[ $HYPERVISOR_NOTIFIER_SIGN_EVENTS == True ]]; then
        iniset "$NOVA_CONF" hypervisor_notifier key "$(hypervisor_notifier_signing_key)"
    fi
    if [[ -n $HYPERVISOR_NOTIFIER_STOPPED_HOLD ]]; then
        iniset "$NOVA_CONF" hypervisor_notifier stopped_hold "$HYPERVISOR_NOTIFIER_STOPPED_HOLD"
    fi
}

function start_hypervisor_notifier {
    local bin_dir
    bin_dir=$(get_python_exec_prefix)
    # No libvirt group: the read-only socket is enough, and open to all.
    run_process hypervisor-notifier \
        "$bin_dir/hypervisor-notifier --config-file $HYPERVISOR_NOTIFIER_CONF"
    if [[ $HYPERVISOR_NOTIFIER_NOVA_CONSUMER == True ]] && is_service_enabled n-cpu; then
        # devstack started n-cpu as nova-compute; the same unit now runs our
        # wrapper, which installs the adapter and runs nova-compute's main.
        local group=""
        if [[ $(iniget "$NOVA_CPU_CONF" DEFAULT compute_driver) == libvirt.* ]]; then
            group=$LIBVIRT_GROUP
        fi
        stop_process n-cpu
        run_process n-cpu \
            "$bin_dir/hypervisor-notifier-nova-compute --config-file $NOVA_CPU_CONF" "$group"
    fi
}

function stop_hypervisor_notifier {
    stop_process hypervisor-notifier
}

function cleanup_hypervisor_notifier {
    sudo rm -rf "$HYPERVISOR_NOTIFIER_CONF_DIR"
    rm -rf "$HYPERVISOR_NOTIFIER_STATE_DIR"
}

if is_service_enabled hypervisor-notifier; then
    if [[ $1 == stack && $2 == install ]]; then
        echo_summary "Installing hypervisor-notifier"
        install_hypervisor_notifier
    elif [[ $1 == stack && $2 == post-config ]]; then
        echo_summary "Configuring hypervisor-notifier"
        configure_hypervisor_notifier
        if [[ $HYPERVISOR_NOTIFIER_NOVA_CONSUMER == True ]]; then
            configure_nova_for_hypervisor_notifier
        fi
    elif [[ $1 == stack && $2 == extra ]]; then
        echo_summary "Starting hypervisor-notifier"
        start_hypervisor_notifier
    fi
    if [[ $1 == unstack ]]; then
        stop_hypervisor_notifier
    fi
    if [[ $1 == clean ]]; then
        cleanup_hypervisor_notifier
    fi
fi
