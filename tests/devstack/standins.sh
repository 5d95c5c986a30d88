#!/bin/bash
# Stand-ins for the devstack helpers that devstack/plugin.sh and
# devstack/settings call, so that tests/unit/test_devstack_plugin.py runs
# the plugin's phases without a devstack checkout (devstack is on no package
# registry). Each does what devstack's documentation says of the helper, in
# the least code; harness.sh uses devstack's own instead when DEVSTACK_DIR
# names a checkout.

# trueorfalse DEFAULT VARNAME: True or False from the variable, else DEFAULT.
function trueorfalse {
    local value=${!2:-$1}
    case ${value,,} in
        1 | yes | true | on) echo True ;;
        0 | no | false | off) echo False ;;
        *) echo "$1" ;;
    esac
}

function define_plugin {
    :
}

function enable_service {
    ENABLED_SERVICES+=",$1"
}

# is_service_enabled SERVICE...: whether any of them is in ENABLED_SERVICES.
function is_service_enabled {
    local service
    for service in "$@"; do
        if [[ ,$ENABLED_SERVICES, == *,$service,* ]]; then
            return 0
        fi
    done
    return 1
}

function echo_summary {
    echo "$@"
}

# die LINENO MESSAGE...: print the message and stop the run.
function die {
    shift
    echo "ERROR: $*" >&2
    exit 1
}

function get_python_exec_prefix {
    if [[ $GLOBAL_VENV == True ]]; then
        echo "$DEVSTACK_VENV/bin"
    else
        echo /usr/local/bin
    fi
}

# setup_develop [-bindep] DIR [EXTRAS]: the bindep packages, then pip install -e.
function setup_develop {
    if [[ $1 == -bindep* ]]; then
        shift
        install_bindep "$1/bindep.txt"
    fi
    pip_install -e "$1${2:+[$2]}"
}

# iniset [-sudo] FILE SECTION OPTION VALUE: set OPTION in [SECTION], adding
# either where missing; the file keeps its inode (and mode).
function iniset {
    if [[ $1 == -sudo ]]; then
        shift
    fi
    local file=$1 edited
    touch "$file"
    edited=$(awk -v section="[$2]" -v option="$3" -v value="$4" '
        function emit() { print option " = " value; done = 1 }
        /^\[/ {
            if (inside && !done) emit()
            inside = ($0 == section)
        }
        inside && $0 ~ "^" option "[ \t]*=" {
            if (!done) emit()
            next
        }
        { print }
        END {
            if (!done && !inside) print section
            if (!done) emit()
        }' "$file")
    printf '%s\n' "$edited" > "$file"
}

# iniget FILE SECTION OPTION: the value, or nothing.
function iniget {
    awk -v section="[$2]" -v option="$3" '
        /^\[/ { inside = ($0 == section); next }
        inside && $0 ~ "^" option "[ \t]*=" {
            sub(/^[^=]*=[ \t]*/, "")
            print
            exit
        }' "$1"
}
