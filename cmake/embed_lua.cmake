# Builds the sluice Redis function library from the files in lua/.
# Each file is the body of one function, written like an EVAL script (KEYS, ARGV);
# it is registered as sluice_v1_<file name>. The library also gets
# sluice_v1_version, which returns the SHA1 of the library text so that
# clients reload it when it changed.
file(GLOB FILES ${LUA_DIR}/*.lua)
list(SORT FILES)
# Files whose name starts with '_' hold shared helpers and go first, unwrapped.
set(head "")
set(body "")
foreach(f ${FILES})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} code)
  if(name MATCHES "^_")
    string(APPEND head "${code}\n")
  else()
    string(APPEND body "redis.register_function('sluice_v1_${name}', function(KEYS, ARGV)\n${code}\nend)\n")
  endif()
endforeach()
set(body "${head}${body}")
string(SHA1 sha "${body}")
set(lib "#!lua name=sluice\n-- sluice function library, protocol v1 (docs/PROTOCOL.md)\n${body}redis.register_function('sluice_v1_version', function() return '${sha}' end)\n")
string(LENGTH "${lib}" len)
# Emit as a C array of bytes: no escaping questions, any length.
string(HEX "${lib}" hex)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" hex "${hex}")
file(WRITE ${OUT} "/* Generated from the files in lua/ by cmake/embed_lua.cmake. Do not edit. */\n#include <stddef.h>\nconst char sl__lua_library[] = {\n${hex}0x00};\nconst size_t sl__lua_library_len = ${len};\nconst char sl__lua_library_sha[] = \"${sha}\";\n")
