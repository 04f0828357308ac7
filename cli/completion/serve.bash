# serve.bash - bash completion for serve(1), the model server CLI.
#
# Enable it in the current shell with `source cli/completion/serve.bash`.
# Installed as share/bash-completion/completions/serve, bash-completion loads
# it the first time `serve` is completed.
#
# What it completes:
#   - subcommands, read from `serve --help`;
#   - each subcommand's options, read from `serve CMD --help` each time (a
#     few milliseconds), so the completion cannot drift from the binary;
#   - option values: directories for --state-dir, files for FILE arguments
#     (deploy FILE, --deploy, --access-log, --plot, --data @FILE), plugins
#     (shipped names and .so files) for create-backend PLUGIN and --plugin,
#     and a few fixed choices (--log-level, --access-log-format, --methods,
#     --isolation);
#   - backend and endpoint names from the running server, through
#     `serve list-backends --json` and `serve list-endpoints --json`, for the
#     state dir named by a --state-dir on the line (else SERVE_STATE_DIR or
#     the default). With no server these queries fail at once and nothing is
#     offered; their stderr is discarded and each is bounded by
#     SERVE_COMPLETION_TIMEOUT seconds (default 1).
# The serve binary used is the one being completed (`./build/serve` works as
# well as `serve` on PATH).

# The plugins that ship with serve.
_serve_shipped_plugins="echo counter sim torch cuda"

# Removes shell quoting from one word the way a user would have typed it
# (surrounding quotes, backslash escapes). Result in REPLY. Tilde expansion
# only when $2 is set.
_serve_dequote()
{
    local v=$1
    case $v in
        \'*\') v=${v:1:${#v}-2} ;;
        \'*) v=${v:1} ;;
        \"*\") v=${v:1:${#v}-2} ;;
        \"*) v=${v:1} ;;
        *) v=${v//\\/} ;;
    esac
    if [[ -n ${2-} && ( $v == \~ || $v == \~/* ) ]]; then
        v=$HOME${v:1}
    fi
    REPLY=$v
}

# Rebuilds the words of the line as the serve CLI will see them: bash splits
# words at COMP_WORDBREAKS characters (= : @ ...), so `--state-dir=/x` and
# `b1=0.5` arrive in pieces. Pieces with no blank between them are joined
# again. The word at the cursor is found from COMP_POINT (with the cursor in
# the blank between two words, bash points COMP_CWORD at the next word; an
# empty word is put there instead). Sets words, cword and cur (the word at
# the cursor, up to the cursor).
_serve_words()
{
    local line=$COMP_LINE point=${COMP_POINT:-${#COMP_LINE}} pos=0 i w gap wstart=0 placed=0
    (( point > ${#line} )) && point=${#line}
    words=() cword=0 cur=
    for (( i = 0; i < ${#COMP_WORDS[@]}; i++ )); do
        w=${COMP_WORDS[i]}
        [[ -z $w ]] && continue
        gap=0
        while [[ ${line:pos:1} == [[:space:]] ]]; do
            (( pos++ ))
            gap=1
        done
        if [[ ${line:pos:${#w}} != "$w" ]]; then
            # The line does not hold the words where expected: take bash's
            # split as it is.
            words=("${COMP_WORDS[@]}")
            cword=$COMP_CWORD
            cur=${COMP_WORDS[COMP_CWORD]-}
            return
        fi
        if (( !placed && point < pos && ${#words[@]} )); then
            words+=("")
            cword=$(( ${#words[@]} - 1 ))
            placed=1
            gap=1
        fi
        if (( gap || ${#words[@]} == 0 )); then
            words+=("$w")
            wstart=$pos
        else
            words[${#words[@]}-1]+=$w
        fi
        (( pos += ${#w} ))
        if (( !placed && point <= pos )); then
            cword=$(( ${#words[@]} - 1 ))
            cur=${line:wstart:point-wstart}
            placed=1
        fi
    done
    if (( !placed )); then
        words+=("")
        cword=$(( ${#words[@]} - 1 ))
    fi
}

# The serve binary being completed, as a path (empty when not found).
_serve_exe()
{
    local w=${words[0]-serve}
    _serve_dequote "$w" 1
    w=$REPLY
    if [[ $w == */* ]]; then
        [[ -x $w && ! -d $w ]] && exe=$w
    else
        exe=$(type -P -- "$w" 2>/dev/null)
        [[ -n $exe ]] || exe=$(type -P serve 2>/dev/null)
    fi
}

# Subcommand names, from `serve --help`. Into cmds.
_serve_commands()
{
    local line in=0 re='^  ([a-z][a-z0-9-]*)[[:space:]]'
    cmds=()
    while IFS= read -r line; do
        if [[ $line == Commands:* ]]; then
            in=1
        elif (( in )); then
            [[ -z $line ]] && break
            [[ $line =~ $re ]] && cmds+=("${BASH_REMATCH[1]}")
        fi
    done < <("$exe" --help 2>/dev/null)
}

# Options of subcommand $1, from `serve $1 --help`: the names into opts, the
# argument's metavar of each option that takes one into meta[name].
_serve_options()
{
    local line in=0 short long
    local re='^[[:space:]]+(-([A-Za-z0-9]),[[:space:]]+)?(--[A-Za-z0-9][A-Za-z0-9-]*)( ([^[:space:]]+))?'
    opts=()
    while IFS= read -r line; do
        if [[ $line == Options:* ]]; then
            in=1
        elif (( in )) && [[ $line =~ $re ]]; then
            short=${BASH_REMATCH[2]:+-${BASH_REMATCH[2]}}
            long=${BASH_REMATCH[3]}
            opts+=("$long")
            [[ -n $short ]] && opts+=("$short")
            if [[ -n ${BASH_REMATCH[5]} ]]; then
                meta[$long]=${BASH_REMATCH[5]}
                [[ -n $short ]] && meta[$short]=${BASH_REMATCH[5]}
            fi
        fi
    done < <("$exe" "$1" --help 2>/dev/null)
}

# Adds each remaining argument that starts with $cur to COMPREPLY.
_serve_add()
{
    local c
    for c in "$@"; do
        [[ $c == "$cur"* ]] && COMPREPLY+=("$c")
    done
}

# Runs `serve [--state-dir DIR] $1 --json` against the server, quietly and
# with a timeout. Output into REPLY; fails when no server answered.
_serve_query()
{
    local -a argv=("$exe")
    local t=${SERVE_COMPLETION_TIMEOUT:-1}
    [[ -n $sdir ]] && argv+=(--state-dir "$sdir")
    argv+=("$1" --json)
    if type -P timeout >/dev/null 2>&1; then
        REPLY=$(timeout -k 1 "$t" "${argv[@]}" 2>/dev/null </dev/null)
    else
        REPLY=$("${argv[@]}" 2>/dev/null </dev/null)
    fi
}

# Names of the server's backends ($1 = backends) or endpoints ($1 = endpoints)
# into names. Names are 1-64 of [A-Za-z0-9_.-], so a pattern finds them in
# the JSON: a backend's name is the first key of its "spec", an endpoint's the
# only string-valued "name" of the listing.
_serve_names()
{
    local json re
    names=()
    _serve_query "list-$1" || return
    json=$REPLY
    if [[ $1 == backends ]]; then
        re='"spec":[[:space:]]*[{][[:space:]]*"name":[[:space:]]*"([A-Za-z0-9_.-]+)"'
    else
        re='"name":[[:space:]]*"([A-Za-z0-9_.-]+)"'
    fi
    while [[ $json =~ $re ]]; do
        names+=("${BASH_REMATCH[1]}")
        json=${json#*"${BASH_REMATCH[0]}"}
    done
}

# Tells readline that the candidates are file names (quoting, a / after a
# folder). Silent outside a real completion (in tests).
_serve_filenames()
{
    compopt -o filenames 2>/dev/null
}

# Files (or, with $2 = dirs, folders) for the value $1; $3: a prefix to put
# back in front of each (the `@` of --data @FILE). With $2 = yaml or so, only
# files with that ending and folders, or every file when none has it.
_serve_files()
{
    local v=$1 kind=${2-} prefix=${3-} f
    local -a found=() fit=()
    _serve_dequote "$v"
    v=$REPLY
    # After a prefix (@FILE) readline cannot tell folders: mark them here.
    [[ -z $prefix ]] && _serve_filenames
    if [[ $kind == dirs ]]; then
        mapfile -t found < <(compgen -d -- "$v")
    else
        mapfile -t found < <(compgen -f -- "$v")
    fi
    if [[ $kind == yaml || $kind == so ]]; then
        for f in "${found[@]}"; do
            _serve_dequote "$f" 1
            if [[ -d $REPLY ]] || { [[ $kind == yaml ]] && [[ $f == *.yaml || $f == *.yml ]]; } ||
                { [[ $kind == so ]] && [[ $f == *.so ]]; }; then
                fit+=("$f")
            fi
        done
        (( ${#fit[@]} )) && found=("${fit[@]}")
    fi
    for f in "${found[@]}"; do
        if [[ -n $prefix ]]; then
            _serve_dequote "$f" 1
            [[ -d $REPLY ]] && f+=/
        fi
        COMPREPLY+=("$prefix$f")
    done
}

# Plugins: the shipped names, the .so files of the folders serve searches
# for bare names, then .so files and folders for a path.
_serve_plugins()
{
    local v=$1 d f b
    local -a dirs=() plugins=()
    local -A seen=()
    local failglob=
    shopt -q failglob && { failglob=1; shopt -u failglob; }
    if [[ $v != */* && $v != .* && $v != \~* ]]; then
        [[ -n ${SERVE_PLUGIN_PATH-} ]] && IFS=: read -ra dirs <<<"$SERVE_PLUGIN_PATH"
        if [[ -n $exe ]]; then
            b=$exe
            [[ -L $b ]] && b=$(readlink -f -- "$b" 2>/dev/null)
            b=${b%/*}
            dirs+=("$b/plugins" "$b"/../lib*/serve/plugins "$b"/../lib*/*/serve/plugins)
        fi
        read -ra plugins <<<"$_serve_shipped_plugins"
        for d in "${dirs[@]}"; do
            for f in "$d"/*.so; do
                [[ -f $f ]] || continue
                f=${f##*/}
                f=${f%.so}
                plugins+=("$f")
            done
        done
        local cur=$v
        for f in "${plugins[@]}"; do
            [[ -n ${seen[$f]-} ]] && continue
            seen[$f]=1
            _serve_add "$f"
        done
    fi
    [[ -n $failglob ]] && shopt -s failglob
    _serve_files "$v" so
}

# Completes the value of option $1 (metavar $2) from the text $3; $4 is put
# back in front of each candidate (`--opt=` when the value is in the same
# word).
_serve_value()
{
    local opt=$1 metavar=$2 v=$3 prefix=${4-} c
    local -a before=("${COMPREPLY[@]}") choices=()
    COMPREPLY=()
    case $opt in
        --state-dir) _serve_files "$v" dirs ;;
        --deploy) _serve_files "$v" yaml ;;
        --plugin) _serve_plugins "$v" ;;
        --backend)
            _serve_names backends
            local cur=$v
            _serve_add "${names[@]}"
            ;;
        --access-log)
            local cur=$v
            _serve_add -
            _serve_files "$v"
            ;;
        --log-level)
            local cur=$v
            _serve_add error warn info debug
            ;;
        --isolation)
            local cur=$v
            _serve_add process thread
            ;;
        --methods | --method)
            # A comma-separated list for --methods: complete its last item.
            local head='' cur=$v
            if [[ $opt == --methods && $v == *,* ]]; then
                head=${v%,*},
                cur=${v##*,}
            fi
            _serve_add GET POST PUT DELETE PATCH HEAD OPTIONS
            if [[ -n $head ]]; then
                for c in "${!COMPREPLY[@]}"; do
                    COMPREPLY[c]=$head${COMPREPLY[c]}
                done
            fi
            ;;
        --data)
            if [[ $v == @* ]]; then
                _serve_files "${v:1}" "" @
                local cur=$v
                _serve_add @-
            fi
            ;;
        *)
            if [[ $metavar =~ ^[a-z]+(\|[a-z]+)+$ ]]; then
                IFS='|' read -ra choices <<<"$metavar"
                local cur=$v
                _serve_add "${choices[@]}"
            elif [[ $metavar == *FILE* ]]; then
                _serve_files "$v"
            elif [[ $metavar == *DIR* ]]; then
                _serve_files "$v" dirs
            fi
            ;;
    esac
    if [[ -n $prefix ]]; then
        for c in "${!COMPREPLY[@]}"; do
            COMPREPLY[c]=$prefix${COMPREPLY[c]}
        done
    fi
    COMPREPLY=("${before[@]}" "${COMPREPLY[@]}")
}

# Completes positional argument number $1 (1 = the first after the
# subcommand) of subcommand $2. Returns 1 when the subcommand takes no more
# positionals there (its options are offered instead).
_serve_positional()
{
    local n=$1 command=$2 w
    local -a used=()
    case $command:$n in
        update-backend:1 | delete-backend:1 | shadow-traffic:2)
            _serve_names backends
            _serve_add "${names[@]}"
            ;;
        delete-endpoint:1 | set-traffic:1 | shadow-traffic:1 | call:1 | bench:1)
            _serve_names endpoints
            _serve_add "${names[@]}"
            ;;
        set-traffic:*)
            # BACKEND=WEIGHT, each backend once.
            for w in "${words[@]:cmd_idx+2:cword-cmd_idx-2}"; do
                [[ $w == *=* ]] && used+=("${w%%=*}")
            done
            _serve_names backends
            local name u
            for name in "${names[@]}"; do
                for u in "${used[@]}"; do
                    [[ $name == "$u" ]] && continue 2
                done
                _serve_add "$name="
            done
            compopt -o nospace 2>/dev/null
            ;;
        create-backend:1 | create-endpoint:1 | shadow-traffic:3) ;; # new names, a fraction
        create-backend:2 | try:1) _serve_plugins "$cur" ;;
        deploy:1) _serve_files "$cur" yaml ;;
        *) return 1 ;;
    esac
    return 0
}

_serve()
{
    local -a words=() cmds=() opts=() names=()
    local -A meta=()
    local cword cur exe='' sdir='' cmd='' cmd_idx=0 i w valopt='' npos=0 dd=0 REPLY
    COMPREPLY=()
    _serve_words
    _serve_exe
    [[ -n $exe ]] || return 0

    # The state dir the CLI would use: the last --state-dir on the line.
    for (( i = 1; i < ${#words[@]}; i++ )); do
        (( i == cword )) && continue
        w=${words[i]}
        if [[ $w == --state-dir ]] && (( i + 1 < ${#words[@]} && i + 1 != cword )); then
            _serve_dequote "${words[i + 1]}" 1
            sdir=$REPLY
        elif [[ $w == --state-dir=* ]]; then
            _serve_dequote "${w#--state-dir=}" 1
            sdir=$REPLY
        fi
    done

    # The subcommand: the first word that is no global option.
    for (( i = 1; i < cword; i++ )); do
        w=${words[i]}
        if [[ $w == --state-dir || $w == --control-timeout ]]; then
            (( i + 1 == cword )) && valopt=$w
            (( i++ ))
        elif [[ $w != -* ]]; then
            cmd=$w
            cmd_idx=$i
            break
        fi
    done

    local keep=''
    if [[ -z $cmd ]]; then
        if [[ $valopt == --state-dir ]]; then
            _serve_value --state-dir DIR "$cur"
        elif [[ -n $valopt ]]; then
            : # a number of seconds
        elif [[ $cur == --state-dir=* ]]; then
            _serve_value --state-dir DIR "${cur#*=}" --state-dir=
        elif [[ $cur == -* ]]; then
            _serve_add --state-dir --control-timeout --help --version
        else
            _serve_commands
            _serve_add "${cmds[@]}"
        fi
    else
        _serve_options "$cmd"
        # Walk the words after the subcommand: count positionals, and see
        # whether the word at the cursor is an option's value.
        for (( i = cmd_idx + 1; i < cword; i++ )); do
            w=${words[i]}
            if (( dd )); then
                (( npos++ ))
            elif [[ $w == -- ]]; then
                dd=1
            elif [[ $w == -?* && $w != *=* && -n ${meta[$w]+set} ]]; then
                (( i + 1 == cword )) && valopt=$w
                (( i++ ))
            elif [[ $w != -?* ]]; then
                (( npos++ ))
            fi
        done
        if [[ -n $valopt ]]; then
            _serve_value "$valopt" "${meta[$valopt]-}" "$cur"
        elif (( !dd )) && [[ $cur == --*=* && -n ${meta[${cur%%=*}]+set} ]]; then
            _serve_value "${cur%%=*}" "${meta[${cur%%=*}]}" "${cur#*=}" "${cur%%=*}="
        elif (( !dd )) && [[ $cur == -* ]]; then
            _serve_add "${opts[@]}"
        elif ! _serve_positional $(( npos + 1 )) "$cmd" && (( !dd )); then
            _serve_add "${opts[@]}"
        fi
    fi

    # Readline replaces only the text after the last word-break character
    # (= : ...) of the word, or from an @ on (bash keeps @ and $ in the text
    # it replaces); take what precedes that off every candidate.
    for (( i = ${#cur} - 1; i >= 0; i-- )); do
        w=${cur:i:1}
        if [[ $w != [[:space:]\'\"] && ${COMP_WORDBREAKS-} == *"$w"* ]]; then
            if [[ $w == [@\$] ]]; then
                keep=${cur:0:i}
            else
                keep=${cur:0:i+1}
            fi
            break
        fi
    done
    if [[ -n $keep ]]; then
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[i]=${COMPREPLY[i]#"$keep"}
        done
    fi
    # A lone folder (no -o filenames for @FILE): let the user go on typing.
    if (( ${#COMPREPLY[@]} == 1 )) && [[ ${COMPREPLY[0]} == */ ]]; then
        compopt -o nospace 2>/dev/null
    fi
    return 0
}

complete -F _serve serve
