# Builds the sluice Redis function library from the files in lua/.
# Each file is the body of one function, written like an EVAL script (KEYS, ARGV);
# it is registered as sluice_v1_<file name> (with the no-writes flag when its
# first line says "(read-only"). The library also gets
# sluice_v1_version (read-only, so FCALL_RO may call it), which returns
# "VERSION+SHA12": the sluice version and the first 12 hex digits of the SHA1
# of the library text, so clients can tell exactly which library is loaded.
#
# -DOUT=FILE     the C file holding the library (compiled into libsluice)
# -DLIB_DIR=DIR  optional: also writes DIR/library.lua (the library text, as
#                FUNCTION LOAD takes it) and DIR/library.version (its
#                version, no newline), which the client packages ship
#                (cmake/stage_clients.cmake)
file(GLOB FILES ${LUA_DIR}/*.lua)
list(SORT FILES)
# Files whose name starts with '_' hold shared helpers and go first, unwrapped.
# Every function's body starts with sl_slot_moving (lua/_lib.lua): it refuses
# to run while the queue's cluster slot is being moved, before any write.
set(head "")
set(body "")
foreach(f ${FILES})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} code)
  if(name MATCHES "^_")
    string(APPEND head "${code}\n")
  elseif(code MATCHES "^[^\n]*\\(read-only")
    # a first line that says "(read-only": registered with the no-writes
    # flag, so FCALL_RO (and a replica) may call it and Redis refuses any write
    string(APPEND body "redis.register_function{function_name='sluice_v1_${name}', callback=function(KEYS, ARGV)\ndo local moving = sl_slot_moving(KEYS) if moving then return moving end end\n${code}\nend, flags={'no-writes'}}\n")
  else()
    string(APPEND body "redis.register_function('sluice_v1_${name}', function(KEYS, ARGV)\ndo local moving = sl_slot_moving(KEYS) if moving then return moving end end\n${code}\nend)\n")
  endif()
endforeach()
set(body "${head}${body}")
string(SHA1 sha "${body}")
string(SUBSTRING "${sha}" 0 12 sha12)
set(version "${VERSION}+${sha12}")
set(lib "#!lua name=sluice\n-- sluice function library, protocol v1 (docs/PROTOCOL.md)\n${body}redis.register_function{function_name='sluice_v1_version', callback=function() return '${version}' end, flags={'no-writes'}}\n")
string(LENGTH "${lib}" len)
# Emit as a C array of bytes: no escaping questions, any length.
string(HEX "${lib}" hex)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" hex "${hex}")
file(WRITE ${OUT} "/* Generated from the files in lua/ by cmake/embed_lua.cmake. Do not edit. */\n#include <stddef.h>\nconst char sl__lua_library[] = {\n${hex}0x00};\nconst size_t sl__lua_library_len = ${len};\nconst char sl__lua_library_version[] = \"${version}\";\n")
if(LIB_DIR)
  file(WRITE ${LIB_DIR}/library.lua "${lib}")
  file(WRITE ${LIB_DIR}/library.version "${version}")
endif()
